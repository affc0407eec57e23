"""Build the VORA WSGI application from settings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import connexion
import flask
import yaml
from connexion.apis.flask_api import FlaskApi
from connexion.jsonifier import Jsonifier
from connexion.resolver import Resolver
from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from redis import Redis
from redis.cluster import RedisCluster

from vora.auth import TokenVerifier
from vora.bodies import BodyLimitMiddleware, WsgiApp
from vora.console import install_console, served_spec, swagger_ui_options
from vora.errors import install_error_handlers
from vora.lifecycle import Lifecycle
from vora.logs import RequestLogMiddleware
from vora.metrics import Metrics
from vora.push_worker import PushWorker
from vora.sessions import SessionService
from vora.settings import Settings
from vora.store.client import REDIS_ERRORS, connect
from vora.store.directory import Directory
from vora.store.sessions import SessionStore
from vora.store.streams import StreamStore
from vora.validation import RuleNamingBodyValidator
from vora.ws.endpoint import install_websocket
from vora.ws.hub import Hub

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class TagResolver(Resolver):  # type: ignore[misc]
    """Bind each operationId to vora.handlers.<first tag>.<operationId>."""

    def resolve_operation_id(self, operation: Any) -> str:
        """Return the dotted name of the handler for an operation."""
        tag = operation._operation["tags"][0].lower()
        return f"vora.handlers.{tag}.{operation.operation_id}"


@dataclass
class VoraState:
    """Everything a request handler needs, built once per app."""

    settings: Settings
    client: Redis
    probe: Redis
    sessions: SessionService
    session_store: SessionStore
    directory: Directory
    verifier: TokenVerifier
    lifecycle: Lifecycle
    allowed_methods: dict[str, tuple[str, ...]]
    streams: StreamStore
    hub: Hub
    metrics: Metrics
    push: PushWorker

    def probe_redis(self) -> str | None:
        """Return None when Redis answers PING within the readiness timeout, else why not."""
        try:
            self.probe.ping()
            if isinstance(self.probe, RedisCluster):
                # A PING reaches one node; the cluster may still have uncovered slots.
                state = self.probe.cluster_info().get("cluster_state")
                if state != "ok":
                    return f"Redis Cluster state is {state}"
        except REDIS_ERRORS as exc:
            return f"Redis does not answer: {type(exc).__name__}"
        return None


class BoundedJSONProvider(DefaultJSONProvider):
    """Parse request JSON so that nesting too deep for Python is a parse error, not a crash."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON, turning a RecursionError into the ValueError of malformed JSON."""
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


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
    def name_operation() -> None:
        rule = request.url_rule
        if rule is not None:
            request.environ["vora.operation"] = operations.get((rule.rule, request.method))


def _route_spec_options(app: Flask, base_path: str, methods: dict[str, tuple[str, ...]]) -> None:
    """Let the spec's own OPTIONS operations answer instead of Flask's automatic ones."""
    with_options = {flask_rule(base_path, p) for p, m in methods.items() if "OPTIONS" in m}
    for rule in app.url_map.iter_rules():
        if rule.rule in with_options and getattr(rule, "provide_automatic_options", False):
            rule.provide_automatic_options = False  # type: ignore[attr-defined]
            rule.methods = (rule.methods or set()) - {"OPTIONS"}
    app.url_map._remap = True


def create_app(settings: Settings) -> Flask:
    """Build the Flask app (Connexion-bound to spec/vora.yaml) without touching Redis."""
    spec = yaml.safe_load((settings.spec_dir / "vora.yaml").read_text())
    # Compact JSON: Connexion's default indent forces Python's slow pure-Python encoder.
    FlaskApi.jsonifier = Jsonifier(flask.json)
    cx = connexion.FlaskApp(__name__, specification_dir=str(settings.spec_dir))
    api = cx.add_api(
        served_spec(spec, settings),
        resolver=TagResolver(),
        strict_validation=True,
        validate_responses=False,
        validator_map={"body": RuleNamingBodyValidator},
        options=swagger_ui_options(settings),
    )
    app: Flask = cx.app
    app.json = BoundedJSONProvider(app)
    _route_spec_options(app, api.base_path, allowed_methods_of(spec))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["JSON_SORT_KEYS"] = False

    client = connect(settings.redis_url, settings.redis_timeout, settings.redis_pool_size)
    probe = connect(settings.redis_url, settings.readiness_timeout, retry=None, retry_on_error=[])
    directory = Directory(client)
    store = SessionStore(
        client, settings.session_ttl, settings.max_sessions_per_identity, settings.max_sessions_per_identity_total
    )
    lifecycle = Lifecycle()
    metrics = Metrics()
    hub = Hub(
        # Its own client: on Cluster a failed REST command resets the client's connections,
        # and the worker's subscription must not go down with them.
        connect(settings.redis_url, settings.redis_timeout),
        store,
        settings.session_ttl * 1000,
        settings.session_max_age * 1000,
        settings.ws_lease_interval,
        metrics.count,
    )
    lifecycle.on_drain(hub.drain)
    # Its own client too: each consumer holds a connection in a blocking read.
    push = PushWorker(settings, connect(settings.redis_url, settings.redis_timeout), store, metrics)
    lifecycle.on_drain(push.stop)
    app.extensions["vora"] = VoraState(
        settings=settings,
        client=client,
        probe=probe,
        sessions=SessionService(directory, store),
        session_store=store,
        directory=directory,
        verifier=TokenVerifier.from_settings(settings),
        lifecycle=lifecycle,
        allowed_methods=allowed_methods_of(spec),
        streams=StreamStore.from_settings(client, settings),
        hub=hub,
        metrics=metrics,
        push=push,
    )
    install_error_handlers(app)
    install_websocket(app, f"{api.base_path}/ws")
    install_console(app, api.base_path)
    name_operations(app, spec, api.base_path)

    if settings.cors_origins:
        CORS(
            app,
            origins=list(settings.cors_origins),
            expose_headers=["X-Request-ID", "WWW-Authenticate", "Allow"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            max_age=600,
        )
    served: WsgiApp = BodyLimitMiddleware(app.wsgi_app, settings.max_body_bytes)
    if settings.server_api_enabled:
        from vora.server_app import ListenerDispatcher, create_server_app

        server = create_server_app(settings, app.extensions["vora"])
        server_api = BodyLimitMiddleware(server, settings.server_api_max_body_bytes)
        served = ListenerDispatcher(served, server_api, settings.server_api_port)
    # Outermost the log, so that a body refused before the app runs is logged too.
    app.wsgi_app = RequestLogMiddleware(served)  # type: ignore[method-assign]
    return app
