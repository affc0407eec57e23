"""Build the server API app (spec/vora-server.yaml), for the telephony side on its own listener."""

from __future__ import annotations

import functools
from typing import Any

import connexion
import yaml
from connexion.exceptions import OAuthProblem
from flask import Flask, Response

from vora.core.server_keys import ServerKeys
from vora.core.settings import Settings
from vora.events.publisher import EventPublisher
from vora.http.connexion import TagResolver, api_class, name_operations
from vora.http.errors import InvalidToken, bearer_challenge, error_response, install_error_handlers
from vora.http.validation import RuleNamingBodyValidator
from vora.observability.metrics import Metrics
from vora.server_api.handlers.connections import ConnectionHandlers
from vora.server_api.handlers.events import EventHandlers
from vora.server_api.rules import SERVER_SPEC_FILE, ServerApi
from vora.store.sessions import SessionStore
from vora.store.streams import NotReplicated, StreamStore

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


def create_server_app(
    settings: Settings,
    *,
    publisher: EventPublisher,
    streams: StreamStore,
    session_store: SessionStore,
    server_keys: ServerKeys,
    metrics: Metrics,
) -> Flask:
    """Build the server API app on the instance's stores, publisher and metrics; nothing connects yet."""
    rules = ServerApi(
        publisher,
        streams,
        session_store,
        settings.spec_dir,
        settings.server_api_max_batch,
        settings.server_api_idempotency_window,
    )
    cx = connexion.FlaskApp(__name__, specification_dir=str(settings.spec_dir))
    cx.api_cls = api_class({KEY_INFO_FUNC: functools.partial(key_info, server_keys)})
    api = cx.add_api(
        SERVER_SPEC_FILE,
        resolver=TagResolver(
            yaml.safe_load((settings.spec_dir / SERVER_SPEC_FILE).read_text()),
            "vora.server_api.handlers",
            {"events": EventHandlers(rules), "connections": ConnectionHandlers(rules)},
        ),
        strict_validation=True,
        validate_responses=False,
        validator_map={"body": RuleNamingBodyValidator},
        options={"swagger_ui": True},
    )
    app: Flask = cx.app
    app.config["MAX_CONTENT_LENGTH"] = settings.server_api_max_body_bytes
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]  # answers in the order the spec lists their fields
    install_error_handlers(app, metrics)
    app.register_error_handler(OAuthProblem, _refuse_without_key)
    app.register_error_handler(NotReplicated, _unconfirmed)
    name_operations(app, api.specification.raw, api.base_path)
    return app
