"""One hub per worker: the registry of this worker's sockets, and the routing of bus notices to them."""

from __future__ import annotations

import json
import time
from collections import defaultdict

from vora.events.publisher import stream_envelope
from vora.store.bus import ControlNotice, EventNotice
from vora.store.streams import stream_position
from vora.ws.connection import Connection, Latency, Metric


class AdmissionWatch:
    """What the bus said about one identity's sessions while a socket of it was being admitted and upgraded."""

    __slots__ = ("ended", "identity", "missed")

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.ended: dict[str, str] = {}  # session id -> why it ended, as announced meanwhile
        self.missed = False  # the bus subscription was lost meanwhile: an announcement may never come

    def ended_reason(self, session_id: str) -> str | None:
        """Say why a session ended while this watch was open, or None when no notice said so."""
        return self.ended.get(session_id)


class Hub:
    """Know which connections are open on this worker, by identity, and hand each the notices of its identity."""

    def __init__(
        self, *, on_metric: Metric = lambda name, n: None, on_latency: Latency = lambda kind, ms, n: None
    ) -> None:
        self._metric = on_metric
        self._latency = on_latency
        self._by_identity: dict[str, set[Connection]] = defaultdict(set)
        self._watches: dict[str, set[AdmissionWatch]] = {}
        self._open = 0  # connections registered: read on every channelOpened and heartbeat, so counted, not summed

    @property
    def open_count(self) -> int:
        """Return how many connections are open on this worker."""
        return self._open

    def watch(self, identity: str) -> AdmissionWatch:
        """Start recording the session ends announced for an identity; call before its socket's admission runs.

        The bus is subscribed already, and a session can only end after the admission found it:
        whatever ends it later is announced after this call, so the watch sees it.
        """
        watch = AdmissionWatch(identity)
        self._watches.setdefault(identity, set()).add(watch)
        return watch

    def unwatch(self, watch: AdmissionWatch) -> None:
        """Stop recording for a socket that registered, or that will never register (refused, upgrade failed)."""
        watches = self._watches.get(watch.identity)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.identity]

    def register(self, conn: Connection, watch: AdmissionWatch | None = None) -> None:
        """Start routing events of the connection's identity to it; terminate it if its session ended meanwhile."""
        conns = self._by_identity[conn.identity]
        if conn not in conns:
            conns.add(conn)
            self._open += 1
            self._metric(f"open:{conn.kind}", 1)  # with the count: unregister decrements it only once
        if watch is not None:
            self.unwatch(watch)
            ended = watch.ended_reason(conn.session_id)
            if ended is not None:
                conn.terminate(ended)

    def unregister(self, conn: Connection) -> None:
        """Stop routing events to a closed connection."""
        conns = self._by_identity.get(conn.identity)
        if conns is not None and conn in conns:
            conns.discard(conn)
            self._open -= 1
            self._metric(f"open:{conn.kind}", -1)
            if not conns:
                del self._by_identity[conn.identity]

    def holds(self, conn: Connection) -> bool:
        """Tell whether the connection is registered (open on this worker)."""
        conns = self._by_identity.get(conn.identity)
        return conns is not None and conn in conns

    def connections(self) -> list[Connection]:
        """List every open connection."""
        return [conn for conns in list(self._by_identity.values()) for conn in list(conns)]

    def deliver(self, notice: EventNotice) -> None:
        """Offer a live event to every connection of its identity; serialised, framed and positioned once for all."""
        conns = self._by_identity.get(notice.identity)
        if not conns:
            return
        event = notice.event
        text = json.dumps(stream_envelope(notice.identity, event))
        frames: dict[str, bytes] = {}  # one frame per transport kind (WebSocket, event stream), shared by its sockets
        position = stream_position(event.event_id)
        event_type = event.event_type
        written: dict[str, int] = {}  # by transport
        for conn in list(conns):
            transport = conn.transport
            frame = frames.get(transport.kind)
            if frame is None:
                frame = frames[transport.kind] = transport.frame(text, event.event_id)
            if conn.offer(position, event_type, frame):
                written[conn.kind] = written.get(conn.kind, 0) + 1
        if written:
            latency_ms = int(time.time() * 1000) - position[0]  # the eventId's milliseconds: when it was published
            for kind, count in written.items():
                self._metric("delivered", count)
                self._latency(kind, latency_ms, count)

    def apply(self, notice: ControlNotice) -> None:
        """Terminate or re-filter the connections of the sessions a control notice names."""
        if notice.action == "terminate":
            for watch in self._watches.get(notice.identity, ()):
                for session_id in notice.sessions:
                    watch.ended.setdefault(session_id, notice.reason)
        conns = self._by_identity.get(notice.identity)
        if not conns:
            return
        for conn in list(conns):
            if conn.session_id not in notice.sessions:
                continue
            if notice.action == "terminate":
                conn.terminate(notice.reason)
            elif notice.action == "subscription":
                conn.set_subscription(notice.events)

    def resync_all(self) -> None:
        """Make every connection re-read its stream and every admission in flight re-check: notices were missed."""
        for watches in self._watches.values():
            for watch in watches:
                watch.missed = True
        for conn in self.connections():
            conn.resync()

    def drain(self) -> None:
        """Tell every socket this instance is going away; never blocks (it may run in a signal handler)."""
        for conn in self.connections():
            conn.terminate("maintenance")
