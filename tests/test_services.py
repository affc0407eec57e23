"""The composition root: what it builds, and how an app's services are found again."""

from __future__ import annotations

import pytest
from flask import Flask

from vora.app import create_app
from vora.core.settings import Settings
from vora.services import EXTENSION, build_services, services_of


def test_create_app_keeps_the_services_it_was_given(settings: Settings) -> None:
    """An app built on given services hands those very services back to gunicorn's hooks and tests."""
    services = build_services(settings)
    app = create_app(settings, services=services)
    assert services_of(app) is services


def test_services_of_refuses_an_app_without_them() -> None:
    """An app whose extension holds something else is a TypeError naming the extension."""
    app = Flask(__name__)
    app.extensions[EXTENSION] = "not services"
    with pytest.raises(TypeError, match=r"app.extensions\['vora'\] is not a Services"):
        services_of(app)


def test_server_keys_are_built_only_with_the_server_api(settings: Settings) -> None:
    """Without a server API key the instance has no key set and serves no server API."""
    assert build_services(settings.with_changes(server_api_keys=())).server_keys is None
