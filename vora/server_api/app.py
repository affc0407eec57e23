"""Build the server API app (spec/vora-server.yaml), for the telephony side on its own listener."""

from __future__ import annotations

import functools
import logging
from typing import Any

import yaml
from connexion.exceptions import OAuthProblem
from flask import Flask, Response

from vora.core.log_fields import error_fields
from vora.core.server_keys import ServerKeys
from vora.core.settings import Settings
from vora.events.publisher import EventPublisher
from vora.http.connexion import TagResolver, VoraFlaskApi
from vora.http.errors import InvalidToken, bearer_challenge, error_response
from vora.http.fast_path import FastPath, routes_of
from vora.http.spec_app import build_spec_app
from vora.http.status_line import StandardReasonPhrases
from vora.observability.metrics import Metrics
from vora.server_api.handlers.connections import ConnectionHandlers
from vora.server_api.handlers.directory import DirectoryHandlers
from vora.server_api.handlers.events import EventHandlers
from vora.server_api.rules import SERVER_SPEC_FILE, PublishUnavailable, ServerApi
from vora.sessions.ownership import Ownership
from vora.store.sessions import SessionStore
from vora.store.streams import NotReplicated, StreamStore

log = logging.getLogger("vora.server_api")

# The name spec/vora-server.yaml gives its bearer check (x-bearerInfoFunc).
KEY_INFO_FUNC = "vora.server_api.app.key_info"
KEY_REQUIRED = "A server API key is required: send 'Authorization: Bearer <server API key>'"


class ServerKeyRefused(InvalidToken):
    """The bearer value is not a configured server API key."""


def key_info(keys: ServerKeys, token: str) -> dict[str, Any]:
    """Accept a configured server API key for Connexion (x-bearerInfoFunc, bound to the app's keys), or refuse it."""
    if keys.accepts(token):
        return {"sub": "server-api"}
    if token.count(".") == 2 and token.startswith("eyJ"):
        raise ServerKeyRefused(description="An access token is not a server API key")
    raise ServerKeyRefused(description="The server API key is not one this server is configured with")


def _refuse_without_key(exc: OAuthProblem) -> Response:
    """Answer 401 in the error shape, saying a server API key (not an access token) is wanted."""
    if isinstance(exc, InvalidToken):
        message = exc.description
        challenge = bearer_challenge("invalid_token", message)
    elif exc.description == "Invalid authorization header":
        message = "The Authorization header must be 'Bearer <server API key>'"
        challenge = bearer_challenge("invalid_request", message)
    else:
        message, challenge = KEY_REQUIRED, bearer_challenge()
    return error_response(401, message, {"WWW-Authenticate": challenge})


def _unconfirmed(exc: NotReplicated) -> Response:
    """Answer 503 for an event the Redis master holds but too few replicas confirmed (a retry with its key is safe)."""
    message = f"{exc}; retry with the same idempotencyKey to publish it exactly once"
    return error_response(503, message, {"Retry-After": "1"})


def install_publish_error_handlers(app: Flask, metrics: Metrics) -> None:
    """Answer the publish's own 503s: unconfirmed by replicas, or not taken by Redis (counted and logged)."""

    def publish_unavailable(exc: PublishUnavailable) -> Response:
        """Answer 503 for a publish Redis could not take, counted and logged as any Redis failure is."""
        log.warning("redis unavailable", extra={"fields": error_fields(exc.__cause__ or exc)})
        metrics.count("redis_error:rest")
        return error_response(exc.status, exc.message, exc.headers)

    app.register_error_handler(NotReplicated, _unconfirmed)
    app.register_error_handler(PublishUnavailable, publish_unavailable)


def create_server_app(
    settings: Settings,
    *,
    publisher: EventPublisher,
    streams: StreamStore,
    session_store: SessionStore,
    ownership: Ownership,
    server_keys: ServerKeys,
    metrics: Metrics,
    fast_path: bool = True,
) -> Flask:
    """Build the server API app on the instance's stores, publisher and metrics; nothing connects yet.

    With fast_path, the well-formed requests of its simple operations (publishEvent, publishBatch)
    skip Connexion's per-request chain (vora.http.fast_path); every other request takes the full stack.
    """
    rules = ServerApi.from_settings(settings, publisher, streams, session_store)
    spec = yaml.safe_load((settings.spec_dir / SERVER_SPEC_FILE).read_text())
    handlers = {
        "events": EventHandlers(rules),
        "connections": ConnectionHandlers(rules),
        "directory": DirectoryHandlers(ownership),
    }
    app, api = build_spec_app(
        settings,
        spec,
        SERVER_SPEC_FILE,
        security={KEY_INFO_FUNC: functools.partial(key_info, server_keys)},
        resolver=TagResolver(spec, "vora.server_api.handlers", handlers),
        max_body_bytes=settings.server_api_max_body_bytes,
        metrics=metrics,
        options={"swagger_ui": True},
    )
    app.register_error_handler(OAuthProblem, _refuse_without_key)
    install_publish_error_handlers(app, metrics)
    # The telephony side publishes one event a request: its path parameter is checked on the fast path too.
    routes = routes_of(app, api.base_path, iter(api.added_operations), path_parameters=True) if fast_path else {}
    if routes:
        app.wsgi_app = FastPath(app, routes, app.wsgi_app, VoraFlaskApi.get_response)  # type: ignore[method-assign] # Flask's documented middleware hook
    app.wsgi_app = StandardReasonPhrases(app.wsgi_app)  # type: ignore[method-assign] # Flask's documented middleware hook
    return app
