"""One hub per worker: the registry of this worker's sockets, and the routing of bus notices to them."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass

from vora.events import stream_envelope
from vora.store.bus import ControlNotice, EventNotice
from vora.store.streams import stream_position
from vora.ws.connection import Connection, Metric
from vora.ws.transport import text_frame


@dataclass
class _Expected:
    """Sockets admitted on a session and not registered yet, and why the session ended meanwhile."""

    sockets: int = 0
    ended: str | None = None


class Hub:
    """Know which connections are open on this worker, by identity, and hand each the notices of its identity."""

    def __init__(self, *, on_metric: Metric = lambda name, n: None) -> None:
        self._metric = on_metric
        self._by_identity: dict[str, set[Connection]] = defaultdict(set)
        self._expected: dict[tuple[str, str], _Expected] = {}

    def expect(self, identity: str, session_id: str) -> None:
        """Watch a session whose socket was admitted but is not upgraded yet: it may end in between."""
        self._expected.setdefault((identity, session_id), _Expected()).sockets += 1

    def forget(self, identity: str, session_id: str) -> None:
        """Stop watching for an admitted socket that will never register (its upgrade failed)."""
        key = (identity, session_id)
        expected = self._expected.get(key)
        if expected is not None:
            expected.sockets -= 1
            if expected.sockets <= 0:
                del self._expected[key]

    def register(self, conn: Connection) -> None:
        """Start routing events of the connection's identity to it; terminate it if its session ended meanwhile."""
        self._by_identity[conn.identity].add(conn)
        self._metric(f"open:{conn.kind}", 1)
        expected = self._expected.get((conn.identity, conn.session_id))
        if expected is not None:
            ended = expected.ended
            self.forget(conn.identity, conn.session_id)
            if ended is not None:
                conn.terminate(ended)

    def unregister(self, conn: Connection) -> None:
        """Stop routing events to a closed connection."""
        conns = self._by_identity.get(conn.identity)
        if conns is not None and conn in conns:
            conns.discard(conn)
            self._metric(f"open:{conn.kind}", -1)
            if not conns:
                del self._by_identity[conn.identity]

    def connections(self) -> list[Connection]:
        """List every open connection."""
        return [conn for conns in list(self._by_identity.values()) for conn in list(conns)]

    def deliver(self, notice: EventNotice) -> None:
        """Offer a live event to every connection of its identity; serialised, framed and positioned once for all."""
        conns = self._by_identity.get(notice.identity)
        if not conns:
            return
        event = notice.event
        frame = text_frame(json.dumps(stream_envelope(notice.identity, event)))
        position = stream_position(event.event_id)
        event_type = event.event_type
        written: dict[str, int] = {}  # by transport
        for conn in list(conns):
            if conn.offer(position, event_type, frame):
                written[conn.kind] = written.get(conn.kind, 0) + 1
        if written:
            latency_ms = int(time.time() * 1000) - position[0]  # the eventId's milliseconds: when it was published
            for kind, count in written.items():
                self._metric("delivered", count)
                self._metric(f"latency_ms:{kind}:{latency_ms}", count)

    def apply(self, notice: ControlNotice) -> None:
        """Terminate or re-filter the connections of the sessions a control notice names."""
        if notice.action == "terminate" and self._expected:
            for session_id in notice.sessions:
                expected = self._expected.get((notice.identity, session_id))
                if expected is not None:
                    expected.ended = notice.reason
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
        """Make every connection re-read its stream: notices were missed."""
        for conn in self.connections():
            conn.resync()

    def drain(self) -> None:
        """Tell every socket this instance is going away; never blocks (it may run in a signal handler)."""
        for conn in self.connections():
            conn.terminate("maintenance")
