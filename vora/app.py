"""Build the VORA WSGI application from settings."""

from __future__ import annotations

import re
from typing import Any

import connexion
import flask
import yaml
from connexion.apis.flask_api import FlaskApi
from connexion.exceptions import ResolverError
from connexion.handlers import ResolverErrorHandler
from connexion.jsonifier import Jsonifier
from connexion.resolver import Resolver
from flask import Flask, request
from flask.globals import request_ctx
from flask_cors import CORS

from vora.asyncapi_page import install_asyncapi_page
from vora.auth import TokenVerifier
from vora.bearer import BearerSecurityHandlerFactory
from vora.bodies import BODY_GATE, BodyGate, BodyLimitMiddleware, WsgiApp
from vora.connexion_request import LazyConnexionRequest
from vora.console import install_console, served_spec, swagger_ui_options
from vora.errors import install_error_handlers
from vora.fast_path import FastPath, done_by_fast_path, routes_of
from vora.json_provider import BoundedJSONProvider
from vora.lifecycle import Lifecycle
from vora.logs import RequestLogMiddleware
from vora.metrics import Metrics
from vora.operations import resolver_error_status
from vora.ownership import Ownership
from vora.push_worker import PushWorker
from vora.sessions import SessionService
from vora.settings import Settings
from vora.state import EXTENSION, VoraState, vora_state
from vora.store.batching import batcher_for
from vora.store.bus import EventBus
from vora.store.client import connect
from vora.store.directory import Directory
from vora.store.sessions import SessionStore
from vora.store.streams import StreamStore
from vora.validation import RuleNamingBodyValidator
from vora.ws.endpoint import EventChannel, install_event_stream, install_websocket
from vora.ws.hub import Hub
from vora.ws.leases import LeaseKeeper, presence_lease_ms
from vora.ws.runner import HubRunner

API_EXTENSION = "vora.api"  # the Connexion API object, whose operations the fast path reads
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class TagResolver(Resolver):  # type: ignore[misc] # connexion is untyped
    """Bind each operationId to vora.handlers.<first tag>.<operationId>."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self._tags = {
            (path, method.upper()): operation["tags"][0].lower()
            for path, item in spec.get("paths", {}).items()
            for method, operation in item.items()
            if method in HTTP_METHODS
        }

    def resolve_operation_id(self, operation: Any) -> str:
        """Return the dotted name of the handler for an operation."""
        tag = self._tags[(operation.path, operation.method.upper())]
        return f"vora.handlers.{tag}.{operation.operation_id}"

    def resolve_function_from_operation_id(self, operation_id: str) -> Any:
        """Import a handler, or say which one is missing and how to write it (Connexion's 501 in development)."""
        try:
            return super().resolve_function_from_operation_id(operation_id)
        except ResolverError as exc:
            function = operation_id.rsplit(".", 1)[-1]
            raise ResolverError(
                f"Operation {function} has no handler {operation_id} yet; `vora scaffold {function}` writes one",
                exc.exc_info,
            ) from None


class VoraFlaskApi(FlaskApi):  # type: ignore[misc] # connexion is untyped
    """Connexion's Flask API with compact JSON, VORA's reading of the Authorization header, its operations kept."""

    def _add_operation_internal(self, method: str, path: str, operation: Any) -> None:
        """Bind an operation's handler to its Flask route, and keep the operation for the fast path."""
        # Connexion adds the operations while its own __init__ runs: no __init__ of ours could come first.
        if not isinstance(operation, ResolverErrorHandler):  # a development 501 has nothing for the fast path
            self.__dict__.setdefault("added_operations", []).append((method, path, operation))
        super()._add_operation_internal(method, path, operation)

    @classmethod
    def _set_jsonifier(cls) -> None:
        """Serialize compact JSON: Connexion's default indent forces Python's slow pure-Python encoder."""
        # A class attribute would not do: Connexion's metaclass calls this after the class body and overwrites it.
        cls.jsonifier = Jsonifier(flask.json)

    @staticmethod
    def make_security_handler_factory(pass_context_arg_name: str | None) -> BearerSecurityHandlerFactory:
        """Build the security handlers that read the header with the rule the WebSocket uses too."""
        return BearerSecurityHandlerFactory(pass_context_arg_name)

    @classmethod
    def get_request(cls, *args: Any, **params: Any) -> LazyConnexionRequest:
        """Wrap the Flask request for Connexion's decorators without reading any part of it yet."""
        context: dict[str, Any] = {}
        setattr(request_ctx, "connexion_context", context)  # where connexion.context reads it  # noqa: B010
        return LazyConnexionRequest(flask.request, params, context)

    @classmethod
    def get_response(cls, response: Any, mimetype: str | None = None, request: Any = None) -> Any:
        """Turn a handler's answer into a Flask response, without the full URL Connexion builds only for debug logs."""
        return cls._get_response(response, mimetype=mimetype)


def allowed_methods_of(spec: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Map each spec path to the methods it declares, upper-cased."""
    return {path: tuple(m.upper() for m in HTTP_METHODS if m in item) for path, item in spec.get("paths", {}).items()}


def flask_rule(base_path: str, spec_path: str) -> str:
    """Turn a spec path like /logout/{identity} into the Flask rule Connexion registers."""
    return base_path + re.sub(r"\{(\w+)\}", r"<\1>", spec_path)


def operation_ids_of(spec: dict[str, Any], base_path: str) -> dict[tuple[str, str], str]:
    """Map (Flask rule, METHOD) to the spec's operationId."""
    return {
        (flask_rule(base_path, path), method.upper()): operation["operationId"]
        for path, item in spec.get("paths", {}).items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def name_operations(app: Flask, spec: dict[str, Any], base_path: str) -> None:
    """Put each request's spec operationId in its environ, for logs and metrics."""
    operations = operation_ids_of(spec, base_path)

    @app.before_request
    @done_by_fast_path
    def name_operation() -> None:
        rule = request.url_rule
        if rule is not None:
            # setdefault: the socket route named its requests "websocket" before (they are no spec operation).
            request.environ.setdefault("vora.operation", operations.get((rule.rule, request.method)))


def _route_spec_options(app: Flask, base_path: str, methods: dict[str, tuple[str, ...]]) -> None:
    """Let the spec's own OPTIONS operations answer instead of Flask's automatic ones."""
    with_options = {flask_rule(base_path, p) for p, m in methods.items() if "OPTIONS" in m}
    for rule in app.url_map.iter_rules():
        if rule.rule in with_options and getattr(rule, "provide_automatic_options", False):
            rule.provide_automatic_options = False  # type: ignore[attr-defined] # Flask sets it on its rules; werkzeug's Rule does not declare it
            rule.methods = (rule.methods or set()) - {"OPTIONS"}
    app.url_map._remap = True


def create_app(settings: Settings, fast_path: bool = True) -> Flask:
    """Build the Flask app (Connexion-bound to spec/vora.yaml) without touching Redis."""
    spec = yaml.safe_load((settings.spec_dir / "vora.yaml").read_text())
    cx = connexion.FlaskApp(__name__, specification_dir=str(settings.spec_dir))
    cx.api_cls = VoraFlaskApi
    api = cx.add_api(
        served_spec(spec, settings),
        resolver=TagResolver(spec),
        strict_validation=True,
        validate_responses=False,
        validator_map={"body": RuleNamingBodyValidator},
        options=swagger_ui_options(settings),
        resolver_error=resolver_error_status(settings.development, settings.spec_dir, "vora.yaml"),
    )
    app: Flask = cx.app
    app.extensions[API_EXTENSION] = api
    app.json = BoundedJSONProvider(app)
    _route_spec_options(app, api.base_path, allowed_methods_of(spec))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["JSON_SORT_KEYS"] = False

    client = connect(settings.redis_url, settings.redis_timeout, settings.redis_pool_size, settings.redis_pool_timeout)
    probe = connect(settings.redis_url, settings.readiness_timeout, retry=None, retry_on_error=[])
    batcher = batcher_for(client, settings)
    directory = Directory(client, batcher)
    store = SessionStore.from_settings(client, settings, batcher)
    streams = StreamStore.from_settings(client, settings)
    ownership = Ownership(directory, store)
    lifecycle = Lifecycle()
    metrics = Metrics()
    hub = Hub(on_metric=metrics.count)
    leases = LeaseKeeper.from_settings(hub, store, settings, metrics.count)
    # The bus has its own client: on Cluster a failed REST command resets the client's
    # connections, and the worker's subscription must not go down with them.
    bus = EventBus(connect(settings.redis_url, settings.redis_timeout), on_metric=metrics.count)
    lifecycle.on_drain(hub.drain)
    # Its own client too: each consumer holds a connection in a blocking read.
    push = PushWorker(settings, connect(settings.redis_url, settings.redis_timeout), store, metrics)
    lifecycle.on_drain(push.stop)
    app.extensions[EXTENSION] = VoraState(
        settings=settings,
        probe=probe,
        sessions=SessionService(
            directory=directory, store=store, presence_lease_ms=presence_lease_ms(settings), ownership=ownership
        ),
        session_store=store,
        directory=directory,
        ownership=ownership,
        verifier=TokenVerifier.from_settings(settings),
        lifecycle=lifecycle,
        allowed_methods=allowed_methods_of(spec),
        streams=streams,
        hub=hub,
        hub_runner=HubRunner(bus=bus, hub=hub, leases=leases, on_metric=metrics.count),
        metrics=metrics,
        push=push,
    )
    install_error_handlers(app)
    channel = EventChannel(app)
    install_websocket(app, f"{api.base_path}/ws", channel)
    install_event_stream(app, f"{api.base_path}/sse", channel)
    install_console(app, api.base_path)
    install_asyncapi_page(app, api.base_path, settings.spec_dir)
    name_operations(app, spec, api.base_path)

    if settings.cors_origins:
        CORS(
            app,
            origins=list(settings.cors_origins),
            expose_headers=["X-Request-ID", "WWW-Authenticate", "Allow"],
            # Last-Event-ID: a page on another origin that resumes /vora/sse through fetch sends it.
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Last-Event-ID"],
            max_age=600,
        )
    served: WsgiApp = app.wsgi_app
    routes = routes_of(app, api.base_path, iter(api.added_operations)) if fast_path else {}
    if routes:
        served = FastPath(app, routes, served, VoraFlaskApi.get_response)
    served = BodyLimitMiddleware(served, settings.max_body_bytes, BodyGate.from_spec(spec, api.base_path))
    if settings.server_api_enabled:
        from vora.server_app import ListenerDispatcher, create_server_app

        server = create_server_app(settings, vora_state(app))
        server_api = BodyLimitMiddleware(server, settings.server_api_max_body_bytes, server.extensions[BODY_GATE])
        served = ListenerDispatcher(served, server_api, settings.server_api_port)
    # Outermost the log, so that a body refused before the app runs is logged too.
    app.wsgi_app = RequestLogMiddleware(served)  # type: ignore[method-assign] # Flask's documented middleware hook
    return app
