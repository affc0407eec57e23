"""The /vora/ws route: check the handshake and admit the socket before the upgrade, then run it."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import time
from typing import Any

from flask import Flask, Response, g, request
from flask_sock import Sock

from vora.bearer import bearer_token
from vora.errors import bearer_challenge, error_response
from vora.fast_path import acts_only_on
from vora.metrics import count_refusal
from vora.sessions import SocketAdmission, SocketRefused
from vora.store.client import REDIS_TROUBLE
from vora.store.streams import parse_event_id
from vora.ws.admission import HandshakeGate
from vora.ws.connection import CLOSE_SERVER_ERROR, Connection, SocketOptions
from vora.ws.reactor import Reactor, call_every, worker_reactor
from vora.ws.transport import WebsocketTransport, handshake_options

log = logging.getLogger("vora.ws")

WEBSOCKET_VERSION = "13"
WEBSOCKET_KEY_BYTES = 16  # RFC 6455 §4.1: the key is 16 random bytes, base64-encoded
QUERY_PARAMETERS = {"token", "lastEventId"}
METRICS_FLUSH_SECONDS = 1.0  # how stale the delivery counter may be on the metrics port
HANDSHAKE_RETRY_AFTER = "1"  # seconds a handshake refused for load or a missing bus should wait before retrying


# Why a handshake was refused, when its status alone does not tell (vora_handshake_refusals_total).
_REFUSAL_REASONS = {400: "bad_request", 401: "unauthorized", 403: "origin", 426: "version", 429: "session_full"}


def _refuse(status: int, message: str, headers: dict[str, str] | None = None, reason: str = "") -> Response:
    count_refusal(WebsocketTransport.kind, reason or _REFUSAL_REASONS.get(status, "other"))
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = bearer_challenge("invalid_token", message)
    return error_response(status, message, headers)


def _is_websocket_key(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == WEBSOCKET_KEY_BYTES
    except (binascii.Error, ValueError):
        return False


def handshake_refusal() -> Response | None:
    """Answer a WebSocket handshake the server could not complete, before the upgrade; None when it is sound."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return _refuse(400, "This endpoint only accepts WebSocket upgrades")
    connection = {token.strip().lower() for token in request.headers.get("Connection", "").split(",")}
    if "upgrade" not in connection:
        return _refuse(400, "A WebSocket handshake needs 'Connection: Upgrade'")
    version = request.headers.get("Sec-WebSocket-Version")
    if version != WEBSOCKET_VERSION:
        # RFC 6455 §4.4: name the version the server speaks; 426 when the client asked for another.
        return _refuse(
            426 if version else 400,
            f"This server speaks WebSocket version {WEBSOCKET_VERSION} only (Sec-WebSocket-Version)",
            {"Sec-WebSocket-Version": WEBSOCKET_VERSION},
        )
    if not _is_websocket_key(request.headers.get("Sec-WebSocket-Key", "")):
        return _refuse(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    if not request.headers.get("Host"):
        return _refuse(400, "A WebSocket handshake needs a Host header")
    return None


def _token_of_request() -> str | None:
    return request.args.get("token") or bearer_token(request.headers.get("Authorization"))


def origin_allowed(origin: str, host: str, allowed: tuple[str, ...]) -> bool:
    """Tell whether a browser page from origin may open the socket served at host."""
    if origin in allowed or "*" in allowed:
        return True
    scheme, _, netloc = origin.partition("://")
    if scheme not in ("http", "https") or not netloc:
        return False
    # Same origin; a proxy that forwards Host without its port (nginx's $host) still matches by name.
    return netloc.lower() == host.lower() or (":" not in host and netloc.rsplit(":", 1)[0].lower() == host.lower())


def install_websocket(app: Flask, path: str) -> None:
    """Add the event WebSocket at path to the app."""
    from vora.state import vora_state

    state = vora_state(app)
    settings = state.settings
    options = SocketOptions.from_settings(settings)
    # No ping_interval here: simple_websocket would ping from its own thread; the transport pings.
    app.config["SOCK_SERVER_OPTIONS"] = handshake_options(max_message_size=settings.ws_max_message_bytes)
    sock = Sock(app)
    reactors: list[Reactor] = []  # the worker's, once the first socket needs it (after the fork)

    def socket_reactor() -> Reactor:
        if not reactors:
            reactors.append(worker_reactor())
            call_every(reactors[0], METRICS_FLUSH_SECONDS, state.metrics.flush)
        return reactors[0]

    gate = HandshakeGate(settings.ws_max_pending_handshakes)

    @app.before_request
    @acts_only_on(path)
    def admit_socket() -> Response | None:
        if request.path != path:
            return None
        request.environ["vora.operation"] = "websocket"
        # permessage-deflate keeps ~90 KB of zlib state per socket: never negotiate it.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        refusal = handshake_refusal()
        if refusal is not None:
            return refusal
        origin = request.headers.get("Origin")
        # Non-browser clients send no Origin; pages may connect from VORA's own origin or a listed one.
        if origin is not None and not origin_allowed(origin, request.host, settings.cors_origins):
            return _refuse(403, f"Pages from {origin} may not open this socket (VORA_CORS_ORIGINS lists who may)")
        if state.lifecycle.draining:
            return _refuse(503, "This instance is draining; connect to another one", reason="draining")
        extra = set(request.args) - QUERY_PARAMETERS
        if extra:
            return _refuse(400, f"Unknown query parameter(s): {', '.join(sorted(extra))}")
        raw_last_event_id = request.args.get("lastEventId") or None
        last_event = parse_event_id(raw_last_event_id) if raw_last_event_id is not None else None
        if raw_last_event_id is not None and last_event is None:
            return _refuse(
                400, "lastEventId must be an eventId such as 1795396666123-0, each part at most 18446744073709551615"
            )
        token = _token_of_request()
        if token is None:
            return _refuse(401, "A webSocketToken is required: pass ?token= or Authorization: Bearer")
        with gate.entered() as entered:
            if not entered:
                # Refused in microseconds, the client backs off; queued, it would hold a greenlet
                # and the pool for seconds and slow every handshake behind it (a reconnect storm).
                state.metrics.count("handshake_shed")
                return _refuse(
                    503,
                    "This instance has too many WebSocket handshakes in progress; retry after Retry-After seconds",
                    {"Retry-After": HANDSHAKE_RETRY_AFTER},
                    reason="overloaded",
                )
            # Subscribed before admitting: a session ending from here on reaches the hub as a notice.
            if not state.hub_runner.ensure_started(settings.ws_accept_timeout):
                return _refuse(
                    503,
                    "The event bus is unavailable on this instance; retry",
                    {"Retry-After": HANDSHAKE_RETRY_AFTER},
                    reason="bus_unavailable",
                )
            try:
                admission = state.sessions.admit_socket(token, last_event, int(time.time() * 1000))
            except SocketRefused as refused:
                return _refuse(refused.status, refused.message)
        state.hub.expect(admission.session.identity, admission.session.session_id)
        g.vora_socket = admission
        return None

    @app.teardown_request
    @acts_only_on(path)
    def release_socket(_error: BaseException | None) -> None:
        admission: SocketAdmission | None = g.pop("vora_socket", None)
        if admission is None:
            return
        if not g.pop("vora_socket_registered", False):
            state.hub.forget(admission.session.identity, admission.session.session_id)
        state.sessions.socket_closed(admission)

    @sock.route(path)  # type: ignore[misc] # flask_sock is untyped
    def events_socket(ws: Any) -> None:
        admission: SocketAdmission = g.vora_socket
        transport = WebsocketTransport.take_over(ws, socket_reactor(), ping_interval=settings.ws_ping_interval)
        hub = state.hub
        conn = Connection(
            transport,
            admission.session,
            token_hash=admission.token_hash,
            streams=state.streams,
            options=options,
            on_metric=state.metrics.count,
            socket_id=admission.socket_id,
        )
        hub.register(conn)  # terminates it at once if its session ended during the upgrade
        g.vora_socket_registered = True
        try:
            if not conn.closing:
                state.push.socket_attached(admission.session)  # a call held up for this session is now ready
            if admission.gap is not None:
                state.metrics.count("resume_gap")
                conn.send_lifecycle("resumeGap", admission.gap)
            if admission.resumed:
                state.metrics.count("resumed")
            conn.start_at(admission.start)
            conn.run()
        except REDIS_TROUBLE as exc:
            # Past the upgrade an HTTP error page would corrupt the socket: close it, the client resumes.
            log.warning("socket setup failed", extra={"fields": {"error": type(exc).__name__}})
            state.metrics.count(f"close:{transport.kind}:{CLOSE_SERVER_ERROR}")
            with contextlib.suppress(OSError):
                transport.close(CLOSE_SERVER_ERROR, "event store unavailable; retry")
        finally:
            hub.unregister(conn)
            transport.release()
            state.metrics.flush()
