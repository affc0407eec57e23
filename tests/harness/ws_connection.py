"""A connection over a socket pair: its session, options, the frames it wrote and the notices it gets."""

from __future__ import annotations

import json

import websocket

from vora.core.catalog import ALL_SCOPES
from vora.events.publisher import PublishedEvent
from vora.store.bus import EventNotice
from vora.store.sessions import StoredSession
from vora.store.streams import StoredEvent
from vora.ws.connection import SocketOptions

IDENTITY = "910111000"


OPTIONS = SocketOptions(queue_limit=10, heartbeat_interval=30.0, send_timeout=10.0)


def session(session_id: str = "s1", events: str = "*") -> StoredSession:
    """Return a stored session of the test identity with every scope."""
    return StoredSession(IDENTITY, session_id, "alice", "WebSocket", False, frozenset(ALL_SCOPES), events, 0)


def notice_of(published: PublishedEvent) -> EventNotice:
    """Turn what a publish returned into the notice the bus would have carried."""
    envelope = published.envelope
    data = json.dumps(envelope["data"], separators=(",", ":"), ensure_ascii=False)
    event = StoredEvent(published.event_id, published.sequence_number, envelope["type"], envelope["timestamp"], data)
    return EventNotice(IDENTITY, event)


def read_frames(ws: websocket.WebSocket, timeout: float = 10.0) -> tuple[list[dict[str, object]], int | None]:
    """Read text frames until the close frame; return them and the close code (None when the socket was cut)."""
    ws.settimeout(timeout)
    frames: list[dict[str, object]] = []
    try:
        while True:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return frames, int.from_bytes(frame.data[:2], "big")
            if opcode == websocket.ABNF.OPCODE_TEXT:
                frames.append(json.loads(frame.data))
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return frames, None
