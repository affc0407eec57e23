"""The /vora/ws route: check the handshake and admit the socket before the upgrade, then run it."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, request

from vora.core.clock import now_ms
from vora.core.lifecycle import Lifecycle
from vora.core.log_fields import error_fields
from vora.core.settings import Settings
from vora.http.bearer import bearer_token
from vora.http.bodies import keep_connection
from vora.http.errors import bearer_challenge, error_response
from vora.http.hooks import acts_only_on
from vora.observability.metrics import Metrics, count_refusal
from vora.push.worker import PushWorker
from vora.sessions.service import UNKNOWN_TOKEN, SessionService, SocketAdmission, SocketRefused, identity_of_token
from vora.store.client import REDIS_TROUBLE
from vora.store.streams import Position, StreamStore, parse_event_id
from vora.ws.admission import HandshakeGate
from vora.ws.connection import CLOSE_SERVER_ERROR, Connection, SocketOptions
from vora.ws.event_stream import STREAM_HEADERS, EventStreamTransport, padding_comment, response_head, retry_field
from vora.ws.hub import AdmissionWatch, Hub
from vora.ws.reactor import Reactor, call_every, worker_reactor
from vora.ws.runner import HubRunner
from vora.ws.transport import ClientBudget, WebsocketTransport
from vora.ws.window import ReconnectWindow

log = logging.getLogger("vora.ws")

WEBSOCKET_VERSION = "13"
WEBSOCKET_KEY_BYTES = 16  # RFC 6455 §4.1: the key is 16 random bytes, base64-encoded
QUERY_PARAMETERS = {"token", "lastEventId"}
METRICS_FLUSH_SECONDS = 1.0  # how stale the delivery counter may be on the metrics port
ADMITTED = "vora.admitted"  # the request's Admitted connection, in its WSGI environ
HANDSHAKE_RETRY_AFTER = "1"  # seconds a handshake refused for load or a missing bus should wait before retrying


# Why a handshake was refused, when its status alone does not tell (vora_handshake_refusals_total).
_REFUSAL_REASONS = {400: "bad_request", 401: "unauthorized", 403: "origin", 426: "version", 429: "session_full"}


def _transport_kind() -> str:
    return EventStreamTransport.kind if request.environ.get("vora.operation") == "eventStream" else "websocket"


def _refuse(status: int, message: str, headers: dict[str, str] | None = None, reason: str = "") -> Response:
    count_refusal(_transport_kind(), reason or _REFUSAL_REASONS.get(status, "other"))
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = bearer_challenge("invalid_token", message)
    return error_response(status, message, headers)


def _is_websocket_key(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == WEBSOCKET_KEY_BYTES
    except (binascii.Error, ValueError):
        return False


# The methods the WebSocket rule upgrades (flask-sock's rule: GET, and HEAD served by the GET view).
UPGRADED_METHODS = frozenset({"GET", "HEAD"})


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


def _presented(raw_last_event_id: str | None) -> tuple[str, str, Position | None] | Response:
    """Return the request's token, the identity it names and the resume position, or the refusal of a bad one."""
    last_event = parse_event_id(raw_last_event_id) if raw_last_event_id is not None else None
    if raw_last_event_id is not None and last_event is None:
        return _refuse(
            400, "lastEventId must be an eventId such as 1795396666123-0, each part at most 18446744073709551615"
        )
    token = _token_of_request()
    if token is None:
        return _refuse(401, "A webSocketToken is required: pass ?token= or Authorization: Bearer")
    identity = identity_of_token(token)
    if identity is None:
        # No session can hold a malformed token: answered without Redis, so an outage is not blamed for it
        # (a 503 asks to retry, and the retry would fail alike) and HEAD, which reads no bus, says the same.
        return _refuse(401, UNKNOWN_TOKEN)
    return token, identity, last_event


DEFAULT_PORTS = {"http": 80, "https": 443}
# Host names that only a browser on this very machine can send: a DNS-rebinding page
# (evil.example resolving to VORA's address) sends its own name, never one of these.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _name_and_port(netloc: str, default_port: int) -> tuple[str, int] | None:
    """Split host[:port] (IPv6 in brackets) into a lower-cased name and a port; None when malformed."""
    try:
        parts = urlsplit(f"//{netloc}")
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return name.lower(), default_port if port is None else port


def origin_allowed(origin: str, host: str, allowed: tuple[str, ...]) -> bool:
    """Tell whether a browser page from origin may open the socket served at host.

    A listed origin (or '*') may. Otherwise only the page's own origin may, and only on a loopback
    Host: any other Host name can be a DNS-rebinding page's own, so a public deployment lists its
    origin in VORA_CORS_ORIGINS. A Host without a port means the origin scheme's default port.
    """
    if origin in allowed or "*" in allowed:
        return True
    scheme, _, netloc = origin.partition("://")
    default_port = DEFAULT_PORTS.get(scheme)
    if default_port is None:
        return False
    page = _name_and_port(netloc, default_port)
    served = _name_and_port(host, default_port)
    return page is not None and page == served and page[0] in LOOPBACK_NAMES


@dataclass(frozen=True)
class SocketServices:
    """What the event channel works with: the session rules, the stream, this worker's hub and its workers."""

    settings: Settings
    lifecycle: Lifecycle
    sessions: SessionService
    streams: StreamStore
    hub: Hub
    hub_runner: HubRunner
    reconnect_window: ReconnectWindow
    metrics: Metrics
    push: PushWorker


@dataclass
class Admitted:
    """A connection admitted before its response, until it is released: its admission, watch, registration."""

    admission: SocketAdmission
    watch: AdmissionWatch | None
    registered: bool = False  # the hub took the connection: releasing it must not unwatch

    @staticmethod
    def of_request() -> Admitted | None:
        """Return the current request's admitted connection, if its admission let it in."""
        admitted = request.environ.get(ADMITTED)
        return admitted if isinstance(admitted, Admitted) else None


class EventChannel:
    """What both transports of the event channel share: admission before the response, and serving a connection."""

    def __init__(self, state: SocketServices) -> None:
        self.state = state
        self.settings = state.settings
        self.options = SocketOptions.from_settings(state.settings, reconnect_window=state.reconnect_window.seconds)
        self.client_budget = ClientBudget(
            state.settings.ws_client_frames_per_minute, state.settings.ws_client_bytes_per_minute
        )
        self._gate = HandshakeGate(state.settings.ws_max_pending_handshakes)
        self._reactors: list[Reactor] = []  # the worker's, once the first socket needs it (after the fork)

    def reactor(self) -> Reactor:
        """Return the worker's reactor, starting it with the first socket (after the fork)."""
        if not self._reactors:
            self._reactors.append(worker_reactor())
            call_every(self._reactors[0], METRICS_FLUSH_SECONDS, self.state.metrics.flush)
        return self._reactors[0]

    def refusal_before_admission(self, allowed_query: set[str]) -> Response | None:
        """Refuse what any transport refuses before touching Redis: a foreign page, a draining instance, odd queries."""
        origin = request.headers.get("Origin")
        # Non-browser clients send no Origin; pages may connect from VORA's own origin or a listed one.
        if origin is not None and not origin_allowed(origin, request.host, self.settings.cors_origins):
            return _refuse(403, f"Pages from {origin} may not open this socket (VORA_CORS_ORIGINS lists who may)")
        if self.state.lifecycle.draining:
            return _refuse(503, "This instance is draining; connect to another one", reason="draining")
        extra = set(request.args) - allowed_query
        if extra:
            return _refuse(400, f"Unknown query parameter(s): {', '.join(sorted(extra))}")
        return None

    def admit(self, raw_last_event_id: str | None) -> Response | None:
        """Admit the request's session (its token, its resume position) or answer the refusal; keep the admission."""
        state, settings = self.state, self.settings
        presented = _presented(raw_last_event_id)
        if isinstance(presented, Response):
            return presented
        token, identity, last_event = presented
        with self._gate.entered() as entered:
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
            # Watched before the admission script runs: a logout (on any instance) that Redis runs after
            # the script found the session is announced after this point, and the watch keeps what it said
            # until the connection registers, however the reply and the notice race through this worker.
            watch = state.hub.watch(identity)
            admitted = False
            try:
                admission = state.sessions.admit_socket(token, last_event, now_ms())
                admitted = True
            except SocketRefused as refused:
                return _refuse(refused.status, refused.message)
            except REDIS_TROUBLE:
                # The app's Redis error handler answers it (503, saying what Redis did); counted here, as a refusal.
                count_refusal(_transport_kind(), "redis_unavailable")
                raise
            finally:
                if not admitted:
                    state.hub.unwatch(watch)
        request.environ[ADMITTED] = Admitted(admission, watch)
        return None

    def describe(self, raw_last_event_id: str | None, headers: list[tuple[str, str]]) -> Response:
        """Answer a HEAD: the refusal its GET would get for its token and position, or the stream's head alone."""
        presented = _presented(raw_last_event_id)
        if isinstance(presented, Response):
            return presented
        try:
            # A read: a HEAD admits nothing, so a session's first real connection still starts at its setup.
            self.state.sessions.check_socket_token(presented[0])
        except SocketRefused as refused:
            return _refuse(refused.status, refused.message)
        except REDIS_TROUBLE:
            count_refusal(_transport_kind(), "redis_unavailable")
            raise
        return _StreamHead(status=200, headers=[*STREAM_HEADERS, *headers])

    def release(self) -> None:
        """Undo an admission whose connection ended, or never started."""
        admitted = request.environ.pop(ADMITTED, None)
        if not isinstance(admitted, Admitted):
            return
        if admitted.watch is not None and not admitted.registered:
            self.state.hub.unwatch(admitted.watch)
        self.state.sessions.socket_closed(admitted.admission)

    def serve(self, admitted: Admitted, transport: WebsocketTransport) -> None:
        """Deliver the admitted session's events on the transport until it closes."""
        state = self.state
        hub = state.hub
        admission = admitted.admission
        conn = Connection(
            transport,
            admission.session,
            token_hash=admission.token_hash,
            streams=state.streams,
            options=self.options,
            on_metric=state.metrics.count,
            on_latency=state.metrics.latency,
            socket_id=admission.socket_id,
        )
        watch = admitted.watch
        # The first message, before anything registering may queue (channelTerminated): where delivery starts
        # after, so that a client that receives nothing else still knows where to resume from.
        opened = {
            "lastEventId": admission.start_id,
            "resumed": admission.resumed,
            "transport": transport.kind,
            "heartbeatIntervalSeconds": self.options.heartbeat_interval,
            "reconnectWindowSeconds": state.reconnect_window.seconds(opening=1),  # this one registers next
        }
        conn.send_lifecycle("channelOpened", opened, admission.start_id)
        hub.register(conn, watch)  # terminates it at once if its session ended during admission or upgrade
        admitted.registered = True
        parked = False
        try:
            if watch is not None and watch.missed and not conn.closing:
                # The bus was lost meanwhile: an end announced then never arrived, so ask Redis.
                ended = state.sessions.ended_reason(admission.session)
                if ended is not None:
                    conn.terminate(ended)
            if not conn.closing:
                state.push.socket_attached(admission.session)  # a call held up for this session is now ready
            if admission.gap is not None:
                state.metrics.count("resume_gap")
                conn.send_lifecycle("resumeGap", admission.gap)
            if admission.resumed:
                state.metrics.count("resumed")
            conn.start_at(admission.start)
            close = keep_connection() if transport.can_park else None
            if close is None:
                conn.run()
            else:
                # The request ends now and frees its greenlet, environ and context; the socket lives on,
                # parked in the reactor, and the admission is released when the connection ends.
                request.environ.pop(ADMITTED, None)
                parked = True
                conn.start(functools.partial(self._end_parked, conn, admission, close))
        except REDIS_TROUBLE as exc:
            if parked:
                raise  # its end ran already (unregistered, released, closed): nothing is left to answer
            # Past the upgrade an HTTP error page would corrupt the stream: close it, the client resumes.
            log.warning("socket setup failed", extra={"fields": error_fields(exc)})
            state.metrics.count(f"close:{transport.kind}:{CLOSE_SERVER_ERROR}")
            with contextlib.suppress(OSError):
                transport.close(CLOSE_SERVER_ERROR, "event store unavailable; retry")
        finally:
            if not parked:
                self._ended(conn)

    def _ended(self, conn: Connection) -> None:
        self.state.hub.unregister(conn)
        conn.transport.release()
        self.state.metrics.flush()

    def _end_parked(self, conn: Connection, admission: SocketAdmission, close: Callable[[], None]) -> None:
        """End a parked connection: what the end of its request does for one that kept its greenlet."""
        try:
            self._ended(conn)
            self.state.sessions.socket_closed(admission)
        finally:
            close()


def _admitted() -> Admitted:
    """Return the connection the route's own before_request hook admitted (it answered otherwise)."""
    admitted = Admitted.of_request()
    if admitted is None:
        raise RuntimeError("the event channel's route ran without its admission")
    return admitted


def install_websocket(app: Flask, path: str, channel: EventChannel) -> None:
    """Add the event WebSocket at path to the app."""
    settings = channel.settings

    @app.before_request
    @acts_only_on(path)
    def admit_socket() -> Response | None:
        if request.path != path:
            return None
        request.environ["vora.operation"] = "websocket"
        if request.method not in UPGRADED_METHODS:
            # Flask answers OPTIONS and refuses the rest (405) after this hook: admitting first would count
            # a socket that never opens and mark the session attached, so its first real socket starts late.
            return None
        refusal = handshake_refusal() or channel.refusal_before_admission(QUERY_PARAMETERS)
        if refusal is not None:
            return refusal
        if "gunicorn.socket" not in request.environ:
            return _refuse(501, "The event WebSocket is served by VORA's gunicorn workers only")
        return channel.admit(request.args.get("lastEventId") or None)

    @app.teardown_request
    @acts_only_on(path)
    def release_socket(_error: BaseException | None) -> None:
        channel.release()

    # A WebSocket rule, as flask-sock made it: GET and HEAD (both upgraded), OPTIONS answered by Flask.
    @app.route(path, websocket=True)
    def events_socket() -> Response:
        environ = request.environ
        transport = WebsocketTransport.upgrade(
            environ["gunicorn.socket"],  # admit_socket answered 501 without it
            environ["HTTP_SEC_WEBSOCKET_KEY"],  # handshake_refusal checked it is one
            channel.reactor(),
            ping_interval=settings.ws_ping_interval,
            max_message_size=settings.ws_max_message_bytes,
            client_budget=channel.client_budget,
            on_metric=channel.state.metrics.count,
        )
        channel.serve(_admitted(), transport)
        return _TakenOver()


class _StreamHead(Response):
    """A HEAD's answer for the event stream: its headers and no length, for its GET's body has none (it streams)."""

    automatically_set_content_length = False


class _TakenOver(Response):
    """The answer of a request whose socket VORA wrote itself (WebSocket, event stream): gunicorn writes no more."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        """Tell gunicorn the connection is done with (its way: StopIteration), as flask-sock does."""
        raise StopIteration


def _cors_headers() -> list[tuple[str, str]]:
    """Return the headers that let the request's page read the stream (its Origin passed admission's check)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return []
    return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]


def install_event_stream(app: Flask, path: str, channel: EventChannel) -> None:
    """Add the Server-Sent Events stream at path: the same session, token, filter and resume as the WebSocket."""
    settings = channel.settings
    # Heartbeats go out every interval: a peer that has acknowledged nothing for two of them is gone.
    user_timeout_ms = int(settings.ws_heartbeat_interval * 2000) + 5000

    @app.before_request
    @acts_only_on(path)
    def admit_stream() -> Response | None:
        if request.path != path or request.method not in ("GET", "HEAD"):
            return None  # Flask answers OPTIONS, and 405 to the rest
        request.environ["vora.operation"] = "eventStream"
        refusal = channel.refusal_before_admission(QUERY_PARAMETERS)
        if refusal is not None:
            return refusal
        # EventSource sends the Last-Event-ID header when it reconnects, to the URL it first opened: the
        # header is newer than a lastEventId that URL may still carry, so it wins.
        last_event_id = request.headers.get("Last-Event-ID") or request.args.get("lastEventId") or None
        if request.method == "HEAD":
            return channel.describe(last_event_id, _cors_headers())
        if "gunicorn.socket" not in request.environ:
            return _refuse(501, "The event stream is served by VORA's gunicorn workers only")
        return channel.admit(last_event_id)

    @app.teardown_request
    @acts_only_on(path)
    def release_stream(_error: BaseException | None) -> None:
        channel.release()

    @app.route(path, methods=["GET"])
    def event_stream() -> Response:
        sock = request.environ["gunicorn.socket"]
        headers = _cors_headers()
        # EventSource's own reconnect delay, jittered over the window the instance announces (this stream counted).
        window = min(channel.state.reconnect_window.seconds(opening=1), settings.sse_retry_window)
        sock.sendall(response_head(headers) + retry_field(window) + padding_comment(settings.sse_padding))
        transport = EventStreamTransport(sock, channel.reactor(), user_timeout_ms=user_timeout_ms)
        channel.serve(_admitted(), transport)
        return _TakenOver()
