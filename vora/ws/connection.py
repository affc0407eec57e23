"""One client socket: its filter, the catch-up from the stream, the live buffer and the writer loop."""

from __future__ import annotations

import functools
import json
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vora.core.catalog import SUBSCRIBABLE_EVENTS, required_scope
from vora.core.log_fields import error_fields
from vora.core.settings import Settings
from vora.events.publisher import lifecycle_envelope, stream_envelope
from vora.store.client import REDIS_TROUBLE, is_permanent
from vora.store.sessions import StoredSession
from vora.store.streams import Position, StoredEvent, StreamStore, stream_id, stream_position
from vora.store.subscriptions import Subscription
from vora.ws.transport import Transport

log = logging.getLogger("vora.ws")

Metric = Callable[[str, int], None]
# (transport, milliseconds from an event's publication to its write, sockets written): typed, since the
# hot path calls it per event and transport, where a name to format and parse back would cost on each.
Latency = Callable[[str, int, int], None]

CATCH_UP_PAGE = 500
CATCH_UP_RETRY = 0.5  # seconds between attempts to read the stream while Redis fails
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_SERVER_ERROR = 1011
CLOSE_SLOW_CONSUMER = 4008
CLOSE_CODES = {"maintenance": CLOSE_GOING_AWAY}
SLOW_CONSUMER = "slow consumer: reconnect with lastEventId"
ALLOWED_CACHE_SIZE = 4096  # distinct (subscription, scopes) pairs whose allowed types are kept


# Sockets with the same subscription and scopes share one set: ~0.7 KB each otherwise, per socket.
@functools.lru_cache(maxsize=ALLOWED_CACHE_SIZE)
def allowed_types(events_value: str, scopes: frozenset[str]) -> frozenset[str]:
    """Return the event types a session may receive: subscribed and covered by its scopes."""
    return frozenset(
        t
        for t in Subscription.decode(events_value).admits(SUBSCRIBABLE_EVENTS)
        if t in SUBSCRIBABLE_EVENTS and required_scope(t) in scopes
    )


@dataclass(frozen=True)
class SocketOptions:
    """The per-socket limits and intervals, from settings."""

    queue_limit: int
    heartbeat_interval: float
    send_timeout: float
    send_buffer: int = 0
    # The instance's reconnect window now, refreshed in each heartbeat (None: heartbeats carry none).
    reconnect_window: Callable[[], float] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, reconnect_window: Callable[[], float] | None = None) -> SocketOptions:
        """Read the socket options from settings; reconnect_window says the instance's window at each heartbeat."""
        return cls(
            queue_limit=settings.ws_queue_size,
            heartbeat_interval=settings.ws_heartbeat_interval,
            send_timeout=settings.ws_send_timeout,
            send_buffer=settings.ws_send_buffer,
            reconnect_window=reconnect_window,
        )


class Connection:
    """Deliver one session's events to one socket, in order and each once.

    The backlog (what the stream holds after the start position) is written straight to
    the socket page by page as it is read; live events wait meanwhile in a buffer bounded
    by the queue limit. While catching up an overflowing buffer is simply emptied, since
    the stream holds those events too and the next page reads them; once caught up, an
    overflow means a slow consumer, closed with 4008.
    """

    # Thousands per worker: no per-instance dict, and no buffers until the first event needs one.
    __slots__ = (
        "_catch_up_at",
        "_catching_up",
        "_closing",
        "_control",
        "_last_position",
        "_latency",
        "_live",
        "_live_dropped",
        "_metric",
        "_next_heartbeat",
        "_on_end",
        "_options",
        "_queue_limit",
        "_streams",
        "allowed",
        "identity",
        "kind",
        "session",
        "session_id",
        "socket_id",
        "token_hash",
        "transport",
    )

    def __init__(
        self,
        transport: Transport,
        session: StoredSession,
        *,
        token_hash: str,
        streams: StreamStore,
        options: SocketOptions,
        on_metric: Metric = lambda name, n: None,
        on_latency: Latency = lambda kind, ms, n: None,
        socket_id: str | None = None,
    ) -> None:
        self.transport = transport
        self.kind = transport.kind
        self.socket_id = socket_id or uuid.uuid4().hex
        self.session = session
        self.identity = session.identity
        self.session_id = session.session_id
        self.token_hash = token_hash
        self.allowed = allowed_types(session.events, session.scopes)
        self._streams = streams
        self._options = options
        self._queue_limit = options.queue_limit  # read on every offer: the hot path
        self._metric = on_metric
        self._latency = on_latency
        self._control: deque[bytes] | None = None  # lifecycle events' frames, written before anything else
        self._live: deque[tuple[Position, bytes]] | None = None  # live events' frames not written yet
        self._catching_up = True
        self._live_dropped = False  # the live buffer overflowed during the current catch-up page
        self._last_position: Position | None = None  # newest stream position written (or skipped by the filter)
        self._closing: tuple[int, str] | None = None
        self._next_heartbeat = math.inf
        self._catch_up_at = 0.0
        self._on_end: Callable[[], None] | None = None  # parked: what ends the socket's life once it closes

    # Called by the hub, from its reader greenlet: must never block.

    def offer(self, position: Position, event_type: str, frame: bytes) -> int:
        """Write a live event's frame now, or buffer it, if the filter allows it; return 1 when it was written now."""
        if event_type not in self.allowed or self._closing is not None:
            return 0
        live = self._live
        if not live and not self._catching_up and not self._control:
            # Nothing is waiting before it: write it from the hub's greenlet if the socket takes it at once.
            last = self._last_position
            if last is not None and position <= last:
                return 0
            if self.transport.try_send(frame):
                self._last_position = position
                return 1
        if live is None:
            live = self._live = deque()
        live.append((position, frame))
        if len(live) > self._queue_limit:
            if self._catching_up:
                live.clear()  # the stream holds them: the catch-up reads them
                self._live_dropped = True
            else:
                self._overflow()
        self.transport.wake()
        return 0

    def set_subscription(self, events_value: str) -> None:
        """Apply a subscription change made through the REST API."""
        self.allowed = allowed_types(events_value, self.session.scopes)

    def terminate(self, reason: str) -> None:
        """Send channelTerminated with a reason, then close."""
        if self._closing is not None:
            return
        self._queue_control(
            json.dumps(lifecycle_envelope(self.identity, "channelTerminated", {"reason": reason})), None
        )
        self._metric(f"terminated:{self.kind}:{reason}", 1)
        self._closing = (CLOSE_CODES.get(reason, CLOSE_NORMAL), reason)
        self.transport.wake()

    def resync(self) -> None:
        """Re-read the stream after the hub lost its subscription for a while."""
        self._catching_up = True
        self.transport.wake()

    # Called by the endpoint before run().

    def start_at(self, after: Position | None) -> None:
        """Set the stream position after which delivery starts (None: the oldest retained)."""
        self._last_position = after

    def send_lifecycle(self, event_type: str, data: dict[str, Any], event_id: str | None = None) -> None:
        """Queue an event VORA itself sends to this socket, ahead of stream events.

        event_id is a position the client may resume from (channelOpened's), for the framing's own id
        where it has one (the event stream's `id:`, which EventSource sends back as Last-Event-ID).
        """
        if self._closing is not None:
            return
        self._queue_control(json.dumps(lifecycle_envelope(self.identity, event_type, data)), event_id)
        self.transport.wake()

    @property
    def closing(self) -> bool:
        """Tell whether this connection has decided to close."""
        return self._closing is not None

    @property
    def catching_up(self) -> bool:
        """Tell whether this connection is still reading the stream rather than writing live events."""
        return self._catching_up

    # Internals.

    def _queue_control(self, text: str, event_id: str | None) -> None:
        if self._control is None:
            self._control = deque()
        self._control.append(self.transport.frame(text, event_id))

    def _overflow(self) -> None:
        if self._live is not None:
            self._metric("dropped", len(self._live))
            self._live.clear()
        self._metric("slow_consumer", 1)
        self._closing = (CLOSE_SLOW_CONSUMER, SLOW_CONSUMER)

    def _write_control(self) -> None:
        control = self._control
        if not control:
            return
        sent = 0
        while control:
            self.transport.send_frame(control.popleft())
            sent += 1
        self._metric("delivered", sent)

    def _catch_up(self) -> None:
        """Write what the stream holds after the last written id, page by page, until it is read to the end."""
        written = 0
        while self._closing is None:
            self._live_dropped = False
            page = self._streams.read_after(self.identity, self._last_position, CATCH_UP_PAGE)
            written += self._write_stored(page)
            if len(page) < CATCH_UP_PAGE and not self._live_dropped:
                break
        self._metric(f"catch_up:{self.kind}", written)
        if self._closing is None:
            self._catching_up = False

    def _write_stored(self, page: Iterable[StoredEvent]) -> int:
        sent = 0
        for event in page:
            if self._closing is not None:
                break
            position = stream_position(event.event_id)
            last = self._last_position
            if last is not None and position[1] > last[1] + 1:
                # Trimmed while this socket read: say so, as a resume would have.
                self._metric("resume_gap", 1)
                gap = {"reason": "retention", "requestedEventId": stream_id(last), "oldestEventId": event.event_id}
                self.transport.send_text(json.dumps(lifecycle_envelope(self.identity, "resumeGap", gap)))
                sent += 1
            if event.event_type in self.allowed:
                text = json.dumps(stream_envelope(self.identity, event))
                self.transport.send_frame(self.transport.frame(text, event.event_id))
                sent += 1
            self._last_position = position
        if sent:
            self._metric("delivered", sent)
        return sent

    def _write_live(self) -> None:
        live = self._live
        if not live:
            return
        send = self.transport.send_frame
        sent = 0
        while live and self._closing is None:
            position, frame = live.popleft()
            if self._last_position is not None and position <= self._last_position:
                continue  # already written: a live copy of an event the catch-up read
            send(frame)
            self._latency(self.kind, int(time.time() * 1000) - position[0], 1)
            self._last_position = position
            sent += 1
        if sent:
            self._metric("delivered", sent)

    def run(self) -> None:
        """Write events until the socket closes or the connection is terminated, in this greenlet (or thread)."""
        self._begin()
        until = self._step(woken=False)
        while until is not None:
            self.transport.sleep(until)
            until = self._step(woken=True)

    def start(self, on_end: Callable[[], None]) -> None:
        """Write what is due now, then leave the socket parked in the reactor; on_end runs once it is over.

        From here on the connection has no greenlet of its own while it has nothing to do: a wake-up
        (an event, the peer's bytes, a due heartbeat or ping) runs the next steps in a new greenlet.
        """
        self._on_end = on_end
        self._begin()
        self._drive(woken=False)

    def _resume(self) -> None:
        self._drive(woken=True)

    def _drive(self, *, woken: bool) -> None:
        """Take steps until the socket has nothing to do (parked: return) or is over (call on_end)."""
        over = True
        try:
            while True:
                until = self._step(woken=woken)
                if until is None:
                    return
                if self.transport.park(until, self._resume):
                    over = False
                    return
                woken = True  # woken while it worked: go on in this greenlet
        finally:
            if over and self._on_end is not None:
                on_end, self._on_end = self._on_end, None
                on_end()

    def _begin(self) -> None:
        options = self._options
        self.transport.configure(send_timeout=options.send_timeout, send_buffer=options.send_buffer)
        self._next_heartbeat = time.monotonic() + options.heartbeat_interval
        self._catch_up_at = 0.0  # a failed catch-up is tried again at this time, the socket kept open

    def _step(self, *, woken: bool) -> float | None:
        """Do what a wake-up brought and write what is due; return when to wake next, or None once closed."""
        transport = self.transport
        options = self._options
        try:
            if woken:
                transport.serve_wake()
            while transport.connected:
                self._write_control()
                if self._catching_up and self._closing is None and time.monotonic() >= self._catch_up_at:
                    try:
                        self._catch_up()
                    except REDIS_TROUBLE as exc:
                        if is_permanent(exc):
                            # A command Redis refuses stays refused: retrying would spin forever.
                            log.warning("catch-up refused", extra={"fields": error_fields(exc)})
                            self._closing = (CLOSE_SERVER_ERROR, "event stream unreadable; reconnect")
                        else:
                            # Live events wait in the live buffer meanwhile (bounded by the queue limit).
                            log.info("catch-up failed", extra={"fields": error_fields(exc)})
                            self._catch_up_at = time.monotonic() + CATCH_UP_RETRY
                if not self._catching_up:
                    self._write_live()
                if self._closing is not None:
                    self._write_control()
                    code, reason = self._closing
                    transport.close(code, reason)
                    self._metric(f"close:{self.kind}:{code}", 1)
                    return None
                now = time.monotonic()
                if now >= self._next_heartbeat:
                    data: dict[str, Any] = {"reason": "interval", "intervalSeconds": options.heartbeat_interval}
                    if options.reconnect_window is not None:
                        data["reconnectWindowSeconds"] = options.reconnect_window()
                    transport.send_text(json.dumps(lifecycle_envelope(self.identity, "heartbeat", data)))
                    self._next_heartbeat = now + options.heartbeat_interval
                    continue
                if self._catching_up:
                    return min(self._next_heartbeat, self._catch_up_at)
                return self._next_heartbeat
            self._metric(f"close:{self.kind}:ended", 1)
        except OSError as exc:  # includes TimeoutError from the send timeout
            log.info("socket write failed", extra={"fields": error_fields(exc)})
            self._close_stalled(exc)
        return None

    def _close_stalled(self, exc: OSError) -> None:
        """Give a socket whose write failed one more send timeout to take a close frame, then cut it."""
        if isinstance(exc, TimeoutError) and self.transport.connected:
            self._metric("slow_consumer", 1)
            try:
                self.transport.close(CLOSE_SLOW_CONSUMER, SLOW_CONSUMER)
                self._metric(f"close:{self.kind}:{CLOSE_SLOW_CONSUMER}", 1)
                return
            except OSError:
                pass
        self._metric(f"close:{self.kind}:aborted", 1)
        self.transport.abort()
