"""The /vora/ws route: authenticate before the upgrade, then hand the socket to the hub."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request
from flask_sock import Sock

from vora.errors import bearer_challenge, error_response
from vora.sessions import hash_token, identity_of_token
from vora.store.client import REDIS_TROUBLE
from vora.store.sessions import StoredSession
from vora.ws.connection import CLOSE_SESSION_GONE, Connection

log = logging.getLogger("vora.ws")

LAST_EVENT_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
# Exclusive start that takes in every stream entry of a millisecond and later ones.
_BEFORE_MILLISECOND = "{}-18446744073709551615"


@dataclass(frozen=True)
class SocketGrant:
    """What the pre-upgrade check found: the session, its token hash and the resume position."""

    session: StoredSession
    token_hash: str
    last_event_id: str | None


def _token_of_request() -> str | None:
    token = request.args.get("token")
    if token:
        return token
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def origin_allowed(origin: str, host: str, allowed: tuple[str, ...]) -> bool:
    """Tell whether a browser page from origin may open the socket served at host."""
    if origin in allowed or "*" in allowed:
        return True
    scheme, _, netloc = origin.partition("://")
    if scheme not in ("http", "https") or not netloc:
        return False
    # Same origin; a proxy that forwards Host without its port (nginx's $host) still matches by name.
    return netloc.lower() == host.lower() or (":" not in host and netloc.rsplit(":", 1)[0].lower() == host.lower())


def _refuse(status: int, message: str) -> Response:
    headers = {"WWW-Authenticate": bearer_challenge("invalid_token", message)} if status == 401 else {}
    return error_response(status, message, headers)


def install_websocket(app: Flask, path: str) -> None:
    """Add the event WebSocket at path to the app."""
    state = app.extensions["vora"]
    settings = state.settings
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": settings.ws_ping_interval,
        "max_message_size": settings.ws_max_message_bytes,
    }
    sock = Sock(app)

    @app.before_request
    def authenticate_socket() -> Response | None:
        if request.path != path:
            return None
        request.environ["vora.operation"] = "websocket"
        # permessage-deflate keeps ~90 KB of zlib state per socket: never negotiate it.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _refuse(400, "This endpoint only accepts WebSocket upgrades")
        origin = request.headers.get("Origin")
        # Non-browser clients send no Origin; pages may connect from VORA's own origin or a listed one.
        if origin is not None and not origin_allowed(origin, request.host, settings.cors_origins):
            return _refuse(403, f"Pages from {origin} may not open this socket (VORA_CORS_ORIGINS lists who may)")
        if state.lifecycle.draining:
            return _refuse(503, "This instance is draining; connect to another one")
        extra = set(request.args) - {"token", "lastEventId"}
        if extra:
            return _refuse(400, f"Unknown query parameter(s): {', '.join(sorted(extra))}")
        last_event_id = request.args.get("lastEventId") or None
        if last_event_id is not None and not LAST_EVENT_ID.match(last_event_id):
            return _refuse(400, "lastEventId must be an eventId such as 1795396666123-0")
        token = _token_of_request()
        if token is None:
            return _refuse(401, "A webSocketToken is required: pass ?token= or Authorization: Bearer")
        identity = identity_of_token(token)
        token_hash = hash_token(token)
        session = state.session_store.session_by_token(identity, token_hash) if identity else None
        if session is None:
            return _refuse(401, "The webSocketToken is unknown, expired or revoked; call /identity/setup again")
        g.vora_socket = SocketGrant(session, token_hash, last_event_id)
        return None

    @sock.route(path)  # type: ignore[misc]
    def events_socket(ws: Any) -> None:
        grant: SocketGrant = g.vora_socket
        hub = state.hub
        if not hub.ensure_started(settings.ws_accept_timeout):
            ws.close(reason=1011, message="event bus unavailable; retry")
            return
        conn = Connection(
            ws,
            grant.session,
            grant.token_hash,
            state.streams,
            settings.ws_queue_size,
            settings.ws_heartbeat_interval,
            settings.ws_send_timeout,
            state.metrics.count,
            settings.ws_send_buffer,
        )
        session = grant.session
        hub.register(conn)
        try:
            attached = state.session_store.attach(
                session.identity, session.session_id, conn.socket_id, int(time.time() * 1000), hub.presence_lease_ms
            )
            if attached:
                state.push.socket_attached(session)  # a call held up for this session is now ready
            if attached == 0:
                # The session ended during the upgrade: say why when Redis still knows.
                reason = state.session_store.ended_reason(session.identity, session.session_id)
                if reason is None:
                    ws.close(reason=CLOSE_SESSION_GONE, message="session ended")
                    return
                conn.terminate(reason)
            elif grant.last_event_id is not None:
                point = state.streams.resume_point(session.identity, grant.last_event_id)
                if point.gap:
                    state.metrics.count("resume_gap")
                    conn.send_lifecycle(
                        "resumeGap",
                        {
                            "reason": "retention",
                            "requestedEventId": grant.last_event_id,
                            "oldestEventId": point.oldest_id,
                        },
                    )
                state.metrics.count("resumed")
                conn.start_at(point.after_id)
            elif attached == 1:
                conn.start_at(_BEFORE_MILLISECOND.format(session.created_at_ms - 1))
            else:
                conn.start_at(state.streams.last_id(session.identity))
            conn.run()
        except REDIS_TROUBLE as exc:
            # Past the upgrade an HTTP error page would corrupt the socket: close it, the client resumes.
            log.warning("socket setup failed", extra={"fields": {"error": type(exc).__name__}})
            ws.close(reason=1011, message="event store unavailable; retry")
        finally:
            hub.unregister(conn)
            try:
                state.session_store.detach(session.identity, session.session_id, conn.socket_id)
            except REDIS_TROUBLE as exc:
                # The socket's lease runs out by itself; presence is only late, not wrong for long.
                log.info("socket detach failed", extra={"fields": {"error": type(exc).__name__}})
