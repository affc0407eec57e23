"""Build the server API app (spec/vora-server.yaml) and route its listener's requests to it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import connexion
import yaml
from connexion.exceptions import OAuthProblem
from flask import Flask, Response

from vora.bodies import BODY_GATE, BodyGate, WsgiApp
from vora.errors import InvalidToken, bearer_challenge, error_response, install_error_handlers
from vora.events import EventCatalog, EventPublisher
from vora.json_provider import BoundedJSONProvider
from vora.operations import resolver_error_status
from vora.server_api import SERVER_SPEC_FILE, PublishUnavailable, ServerApi
from vora.server_keys import ServerKeys
from vora.settings import Settings
from vora.state import EXTENSION, VoraState, extension, vora_state
from vora.status_line import StandardReasonPhrases
from vora.store.streams import NotReplicated
from vora.validation import RuleNamingBodyValidator

log = logging.getLogger("vora.server_api")

SERVER_API = "vora.server"
SERVER_KEYS = "vora.server_keys"
KEY_REQUIRED = "A server API key is required: send 'Authorization: Bearer <server API key>'"


class ServerKeyRefused(InvalidToken):
    """The bearer value is not a configured server API key."""


def server_api() -> ServerApi:
    """Return the server API service of the current app."""
    return extension(SERVER_API, ServerApi)


def key_info(token: str) -> dict[str, Any]:
    """Accept a configured server API key for Connexion (x-bearerInfoFunc), or refuse it with a reason."""
    keys = extension(SERVER_KEYS, ServerKeys)
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


def _publish_unavailable(exc: PublishUnavailable) -> Response:
    """Answer 503 for a publish Redis could not take, counted and logged as any Redis failure is."""
    log.warning("redis unavailable", extra={"fields": {"error": type(exc.__cause__ or exc).__name__}})
    vora_state().metrics.count("redis_error:rest")
    return error_response(exc.status, exc.message, exc.headers)


def create_server_app(settings: Settings, state: VoraState) -> Flask:
    """Build the server API app on the public app's state (its Redis clients, stores and metrics)."""
    from vora.app import TagResolver, VoraFlaskApi, name_operations

    cx = connexion.FlaskApp(__name__, specification_dir=str(settings.spec_dir))
    cx.api_cls = VoraFlaskApi  # compact JSON and the public API's reading of requests
    api = cx.add_api(
        SERVER_SPEC_FILE,
        resolver=TagResolver(yaml.safe_load((settings.spec_dir / SERVER_SPEC_FILE).read_text())),
        strict_validation=True,
        validate_responses=False,
        validator_map={"body": RuleNamingBodyValidator},
        options={"swagger_ui": True},
        resolver_error=resolver_error_status(settings.development, settings.spec_dir, SERVER_SPEC_FILE),
    )
    app: Flask = cx.app
    app.json = BoundedJSONProvider(app)
    app.json.sort_keys = False  # answers in the order the spec lists their fields
    app.config["MAX_CONTENT_LENGTH"] = settings.server_api_max_body_bytes
    publisher = EventPublisher(EventCatalog(settings.spec_dir), state.streams)
    app.extensions[EXTENSION] = state
    app.extensions[BODY_GATE] = BodyGate.from_spec(api.specification.raw, api.base_path)
    app.extensions[SERVER_KEYS] = ServerKeys(settings.server_api_keys, settings.server_api_keys_file)
    app.extensions[SERVER_API] = ServerApi(
        publisher,
        state.streams,
        state.session_store,
        settings.spec_dir,
        settings.server_api_max_batch,
        settings.server_api_idempotency_window,
    )
    install_error_handlers(app)
    app.register_error_handler(OAuthProblem, _refuse_without_key)
    app.register_error_handler(NotReplicated, _unconfirmed)
    app.register_error_handler(PublishUnavailable, _publish_unavailable)
    name_operations(app, api.specification.raw, api.base_path)
    app.wsgi_app = StandardReasonPhrases(app.wsgi_app)  # type: ignore[method-assign] # Flask's documented middleware hook
    return app


def listener_port(environ: dict[str, Any]) -> int | None:
    """Return the local port of the listener the request arrived on (gunicorn's socket, not the Host header)."""
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        try:
            address = sock.getsockname()
        except OSError:
            return None
        return address[1] if isinstance(address, tuple) else None
    port = environ.get("SERVER_PORT", "")
    return int(port) if str(port).isdigit() else None


class ListenerDispatcher:
    """Send what arrives on the server API's listener to the server API app, the rest to the public app."""

    def __init__(self, public: WsgiApp, server: WsgiApp, server_port: int) -> None:
        self._public = public
        self._server = server
        self._server_port = server_port

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Serve one request with the app of the listener it came in on."""
        if listener_port(environ) == self._server_port:
            return self._server(environ, start_response)
        return self._public(environ, start_response)
