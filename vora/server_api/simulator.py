"""Build the console's telephony simulator (spec/vora-console.yaml): the server API's rules for a logged-in user."""

from __future__ import annotations

import functools
from typing import Final

import yaml
from flask import Flask

from vora.auth.tokens import TOKEN_INFO_FUNC, TokenVerifier, token_info
from vora.core.settings import Settings
from vora.events.publisher import EventPublisher
from vora.http.bodies import BODY_GATE, BodyGate
from vora.http.connexion import TagResolver
from vora.http.errors import install_error_handlers
from vora.http.spec_app import build_spec_app
from vora.observability.metrics import Metrics
from vora.server_api.app import install_publish_error_handlers
from vora.server_api.handlers.simulator import SimulatorHandlers
from vora.server_api.rules import ServerApi
from vora.sessions.ownership import Ownership
from vora.store.sessions import SessionStore
from vora.store.streams import StreamStore

SIMULATOR_SPEC_FILE: Final = "vora-console.yaml"
# Every request under this path goes to the simulator's app (vora.app), on or off: off, it answers 404 to all.
SIMULATOR_PATH: Final = "/vora/console/simulator"


def create_simulator_app(
    settings: Settings,
    *,
    verifier: TokenVerifier,
    publisher: EventPublisher,
    streams: StreamStore,
    session_store: SessionStore,
    ownership: Ownership,
    metrics: Metrics,
) -> Flask:
    """Build the simulator's app on the instance's publisher and stores; off, an app that finds nothing."""
    if not settings.console_simulator:
        # No route at all: every method on every simulator path is 404 "No resource at ...", as any unknown path.
        absent = Flask(__name__)
        install_error_handlers(absent, metrics)
        absent.extensions[BODY_GATE] = BodyGate(())
        return absent
    spec = yaml.safe_load((settings.spec_dir / SIMULATOR_SPEC_FILE).read_text())
    rules = ServerApi.from_settings(settings, publisher, streams, session_store)
    app, _ = build_spec_app(
        settings,
        spec,
        SIMULATOR_SPEC_FILE,
        security={TOKEN_INFO_FUNC: functools.partial(token_info, verifier)},
        resolver=TagResolver(spec, "vora.server_api.handlers", {"simulator": SimulatorHandlers(rules, ownership)}),
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        options={"swagger_ui": False, "serve_spec": False},
    )
    install_publish_error_handlers(app, metrics)
    return app
