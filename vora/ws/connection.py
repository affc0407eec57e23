"""One client socket: its filter, its outbox, and the loop that writes to it."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from vora.catalog import SUBSCRIBABLE_EVENTS, required_scope
from vora.events import lifecycle_envelope, stream_envelope
from vora.sessions import subscribed_events
from vora.store.client import REDIS_TROUBLE
from vora.store.sessions import StoredSession
from vora.store.streams import StoredEvent, StreamStore, stream_id_key

log = logging.getLogger("vora.ws")

Position = tuple[int, int]  # a stream id as (milliseconds, sequence number)
CATCH_UP_PAGE = 500
CATCH_UP_RETRY = 0.5  # seconds between attempts to read the stream while Redis fails
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_SLOW_CONSUMER = 4008
CLOSE_SESSION_GONE = 4401
CLOSE_CODES = {"maintenance": CLOSE_GOING_AWAY}


def allowed_types(events_value: str, scopes: frozenset[str]) -> frozenset[str]:
    """Return the event types a session may receive: subscribed and covered by its scopes."""
    return frozenset(
        t for t in subscribed_events(events_value) if t in SUBSCRIBABLE_EVENTS and required_scope(t) in scopes
    )


class Connection:
    """Deliver one session's events to one socket, in order and each once."""

    def __init__(
        self,
        ws: Any,
        session: StoredSession,
        token_hash: str,
        streams: StreamStore,
        queue_limit: int,
        heartbeat_interval: float,
        send_timeout: float,
        on_metric: Callable[[str, int], None] = lambda name, n: None,
        send_buffer: int = 0,
    ) -> None:
        self.ws = ws
        self.socket_id = uuid.uuid4().hex
        self.session = session
        self.identity = session.identity
        self.session_id = session.session_id
        self.token_hash = token_hash
        self.allowed = allowed_types(session.events, session.scopes)
        self._streams = streams
        self._queue_limit = queue_limit
        self._heartbeat_interval = heartbeat_interval
        self._send_timeout = send_timeout
        self._metric = on_metric
        self._send_buffer = send_buffer
        self._outbox: deque[str] = deque()
        self._pending: list[tuple[str, Position, str]] = []  # live events held while catching up
        self._catching_up = True
        self._last_id: str | None = None  # newest stream id queued for this socket
        self._last_position: Position | None = None  # the same id, parsed once
        self._closing: tuple[int, str] | None = None

    # Called by the hub, from its reader greenlet: must never block.

    def offer(self, event_id: str, position: Position, event_type: str, payload: str) -> None:
        """Queue a live event for this socket if its filter allows it."""
        if event_type not in self.allowed or self._closing is not None:
            return
        if self._catching_up:
            self._pending.append((event_id, position, payload))
            if len(self._pending) > self._queue_limit:
                self._overflow()
            return
        self._queue(event_id, position, payload)

    def set_subscription(self, events_value: str) -> None:
        """Apply a subscription change made through the REST API."""
        self.allowed = allowed_types(events_value, self.session.scopes)

    def terminate(self, reason: str) -> None:
        """Send channelTerminated with a reason, then close."""
        if self._closing is not None:
            return
        self._outbox.append(json.dumps(lifecycle_envelope(self.identity, "channelTerminated", {"reason": reason})))
        self._closing = (CLOSE_CODES.get(reason, CLOSE_NORMAL), reason)
        self._wake()

    def resync(self) -> None:
        """Re-read the stream after the hub lost its subscription for a while."""
        self._catching_up = True
        self._wake()

    # Internals.

    def _queue(self, event_id: str, position: Position, payload: str) -> None:
        if self._last_position is not None and position <= self._last_position:
            return  # already queued: a live copy of an event the catch-up read
        self._last_id, self._last_position = event_id, position
        self._outbox.append(payload)
        if len(self._outbox) > self._queue_limit:
            self._overflow()
        self._wake()

    def _overflow(self) -> None:
        self._metric("dropped", len(self._outbox) + len(self._pending))
        self._metric("slow_consumer", 1)
        self._outbox.clear()
        self._pending.clear()
        self._closing = (CLOSE_SLOW_CONSUMER, "slow consumer: reconnect with lastEventId")
        self._wake()

    def _wake(self) -> None:
        self.ws.event.set()

    def _catch_up(self) -> None:
        """Queue what the stream holds after the last queued id, then what arrived meanwhile."""
        while self._closing is None:
            page = self._streams.read_after(self.identity, self._last_id, CATCH_UP_PAGE)
            for event in page:
                self._queue_stored(event)
            if len(page) < CATCH_UP_PAGE:
                break
        pending, self._pending = self._pending, []
        for event_id, position, payload in pending:
            self._queue(event_id, position, payload)
        self._catching_up = False

    def _queue_stored(self, event: StoredEvent) -> None:
        position = stream_id_key(event.event_id)
        if event.event_type in self.allowed:
            self._queue(event.event_id, position, json.dumps(stream_envelope(self.identity, event)))
        else:
            self._last_id, self._last_position = event.event_id, position

    def start_at(self, after_id: str | None) -> None:
        """Set the stream position after which delivery starts (None: the oldest retained)."""
        self._last_id = after_id
        self._last_position = stream_id_key(after_id) if after_id is not None else None

    def send_lifecycle(self, event_type: str, data: dict[str, Any]) -> None:
        """Queue an event VORA itself sends to this socket."""
        self._outbox.append(json.dumps(lifecycle_envelope(self.identity, event_type, data)))
        self._wake()

    def run(self) -> None:
        """Write queued events until the socket closes or the connection is terminated."""
        ws = self.ws
        ws.sock.settimeout(self._send_timeout)
        if self._send_buffer:
            # A small kernel buffer makes a stalled client show up in the outbox, and bounds memory.
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
        next_heartbeat = time.monotonic() + self._heartbeat_interval
        catch_up_at = 0.0  # a failed catch-up is tried again at this time, the socket kept open
        try:
            while ws.connected:
                if self._catching_up and self._closing is None and time.monotonic() >= catch_up_at:
                    try:
                        self._catch_up()
                    except REDIS_TROUBLE as exc:
                        # Live events wait in _pending meanwhile (bounded by the queue limit).
                        log.info("catch-up failed", extra={"fields": {"error": type(exc).__name__}})
                        catch_up_at = time.monotonic() + CATCH_UP_RETRY
                sent = 0
                while self._outbox:
                    ws.send(self._outbox.popleft())
                    sent += 1
                if sent:
                    self._metric("delivered", sent)
                if self._closing is not None:
                    code, reason = self._closing
                    ws.close(reason=code, message=reason)
                    return
                ws.input_buffer.clear()  # clients have nothing to say; drop what they send
                now = time.monotonic()
                if now >= next_heartbeat:
                    data = {"reason": "interval", "intervalSeconds": self._heartbeat_interval}
                    ws.send(json.dumps(lifecycle_envelope(self.identity, "heartbeat", data)))
                    next_heartbeat = now + self._heartbeat_interval
                    continue
                wake_at = min(next_heartbeat, catch_up_at) if self._catching_up else next_heartbeat
                ws.event.wait(timeout=max(0.0, wake_at - now))
                ws.event.clear()
        except OSError as exc:  # includes TimeoutError from the send timeout
            log.info("socket write failed", extra={"fields": {"error": type(exc).__name__}})
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection when no close frame can get through."""
        self.ws.connected = False
        with contextlib.suppress(OSError):
            self.ws.sock.shutdown(socket.SHUT_RDWR)
