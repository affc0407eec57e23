"""Build the app for gunicorn from VORA_* variables: `vora.wsgi:app_from_env()`."""

from __future__ import annotations

from flask import Flask

from vora.app import create_app
from vora.logs import configure_logging
from vora.settings import Settings


def app_from_env() -> Flask:
    """Read settings from the environment, set up logging and build the app."""
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
