"""Build the client API's app (spec/vora.yaml): its handlers, the WebSocket, the console, the fast path."""

from __future__ import annotations

import functools
from collections.abc import Callable

import yaml
from flask import Flask
from flask_cors import CORS

from vora.auth.tokens import TOKEN_INFO_FUNC, TokenVerifier, token_info
from vora.core.lifecycle import Lifecycle
from vora.core.settings import Settings
from vora.http.connexion import (
    TagResolver,
    VoraFlaskApi,
    allowed_methods_of,
    route_spec_options,
)
from vora.http.fast_path import FastPath, routes_of
from vora.http.spec_app import build_spec_app
from vora.observability.metrics import Metrics
from vora.rest.asyncapi_page import install_asyncapi_page
from vora.rest.console import install_console, served_spec, swagger_ui_options
from vora.rest.handlers.health import HealthHandlers
from vora.rest.handlers.session import SessionHandlers
from vora.rest.landing import install_landing
from vora.sessions.ownership import DirectoryState
from vora.sessions.service import SessionService
from vora.ws.endpoint import EventChannel, SocketServices, install_event_stream, install_websocket

SPEC_FILE = "vora.yaml"
API_EXTENSION = "vora.api"  # the Connexion API object, whose operations the fast path reads


def create_rest_app(
    settings: Settings,
    *,
    verifier: TokenVerifier,
    sessions: SessionService,
    lifecycle: Lifecycle,
    redis_problem: Callable[[], str | None],
    directory_state: Callable[[], DirectoryState],
    metrics: Metrics,
    sockets: SocketServices,
    fast_path: bool = True,
) -> Flask:
    """Build the Flask app Connexion binds to spec/vora.yaml, its WebSocket and console; nothing connects yet."""
    spec = yaml.safe_load((settings.spec_dir / SPEC_FILE).read_text())
    allowed_methods = allowed_methods_of(spec)
    check_token = functools.partial(token_info, verifier)
    handlers = {
        "session": SessionHandlers(sessions, allowed_methods),
        "health": HealthHandlers(lifecycle, redis_problem, directory_state),
    }
    app, api = build_spec_app(
        settings,
        spec,
        SPEC_FILE,
        security={TOKEN_INFO_FUNC: check_token},
        resolver=TagResolver(spec, "vora.rest.handlers", handlers),
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        options=swagger_ui_options(settings),
        served_spec=served_spec(spec, settings),
    )
    app.extensions[API_EXTENSION] = api
    route_spec_options(app, api.base_path, allowed_methods)
    channel = EventChannel(sockets)
    install_websocket(app, f"{api.base_path}/ws", channel)
    install_event_stream(app, f"{api.base_path}/sse", channel)
    install_console(app, api.base_path, settings)
    install_asyncapi_page(app, api.base_path, settings.spec_dir, settings.asyncapi_page)
    install_landing(app, api.base_path, settings)

    if settings.cors_origins:
        CORS(
            app,
            origins=list(settings.cors_origins),
            # Retry-After is no CORS-safelisted header: unexposed, a page of another origin reads None in a
            # 429 or 503 and retries sooner than the answer asks (the SDK's fetch reads it on /vora/sse and setup).
            expose_headers=["X-Request-ID", "WWW-Authenticate", "Allow", "Retry-After"],
            # Last-Event-ID: a page on another origin that resumes /vora/sse through fetch sends it.
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Last-Event-ID"],
            max_age=600,
        )
    routes = routes_of(app, api.base_path, iter(api.added_operations)) if fast_path else {}
    if routes:
        app.wsgi_app = FastPath(app, routes, app.wsgi_app, VoraFlaskApi.get_response)  # type: ignore[method-assign] # Flask's documented middleware hook
    return app
