"""The Server-Sent Events transport: a text/event-stream response written to the raw socket, event by event.

It writes and waits exactly as the WebSocket transport does (whole writes, the hub's greenlet
writing a live event at once when it can, the worker's reactor watching the socket); what differs
is the framing (`id:` and `data:` lines), that nothing is read (the client has nothing to say once
its request is sent, so anything it sends, or its EOF, ends the stream), and that there is no ping:
heartbeat events keep the path warm, and TCP_USER_TIMEOUT cuts a peer that stopped acknowledging.
"""

from __future__ import annotations

import contextlib
import random
import socket
from typing import cast

from vora.ws.reactor import Reactor
from vora.ws.transport import Framing, WebsocketTransport

CONTENT_TYPE = "text/event-stream; charset=utf-8"
# EventSource waits `retry` milliseconds before it reconnects: drawn per stream, so that the streams of a
# dead instance come back spread over the reconnect window it announces to WebSocket clients (full jitter).
RETRY_MIN_MS = 500
_NO_PROTOCOL = cast(Framing, None)  # an event stream speaks no WebSocket: every method using it is overridden


def event_stream_message(text: str, event_id: str | None) -> bytes:
    """Frame one envelope as an event-stream message: `id:` for stream events (EventSource's Last-Event-ID), `data:`.

    Lifecycle events carry no `id:` line, so a heartbeat never moves the browser's Last-Event-ID; only
    channelOpened does, with the position the stream starts after (where to resume if nothing follows).
    The envelope is one line of JSON (json.dumps escapes newlines), so one `data:` line holds it.
    """
    if event_id is None:
        return f"data: {text}\n\n".encode()
    return f"id: {event_id}\ndata: {text}\n\n".encode()


def retry_field(window_seconds: float, rng: random.Random | None = None) -> bytes:
    """Return the stream's opening `retry:` field, its reconnect delay drawn uniformly from the jitter window."""
    delay = (rng or random).randint(RETRY_MIN_MS, max(RETRY_MIN_MS, int(window_seconds * 1000)))
    return f"retry: {delay}\n\n".encode()


def padding_comment(size: int) -> bytes:
    """Return a comment of size bytes (at least 3: ':' and the blank line; none for 0) that every reader skips.

    Security gateways that scan a response hold its first bytes, head included, until they have some
    kilobytes: a stream whose opening (head, retry, channelOpened) is smaller stays held there until
    enough heartbeats add up, minutes later. Padding past that size lets the rest pass event by event.
    """
    if size <= 0:
        return b""
    return b":" + b" " * max(0, size - 3) + b"\n\n"


# What an event stream's 200 says of itself, to a GET before its events and to a HEAD alone.
STREAM_HEADERS = (
    ("Content-Type", CONTENT_TYPE),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),  # nginx: pass each event on at once
)


def response_head(headers: list[tuple[str, str]]) -> bytes:
    """Render the HTTP/1.1 head of an event stream: 200, the event-stream type, no caching, no proxy buffering."""
    lines = [
        "HTTP/1.1 200 OK",
        *(f"{name}: {value}" for name, value in STREAM_HEADERS),
        "Connection: close",  # the body ends when the stream does
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class EventStreamTransport(WebsocketTransport):
    """A text/event-stream response on a socket taken over from gunicorn, served by its own greenlet."""

    __slots__ = ()
    kind = "sse"

    def __init__(self, sock: socket.socket, reactor: Reactor, *, user_timeout_ms: int) -> None:
        super().__init__(sock, _NO_PROTOCOL, reactor, ping_interval=0, max_message_size=0)
        if user_timeout_ms and hasattr(socket, "TCP_USER_TIMEOUT"):
            # No pong exists here: a peer that stops acknowledging is cut by the kernel after this long.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)

    @staticmethod
    def frame(text: str, event_id: str | None) -> bytes:
        """Return the event-stream message that carries the event."""
        return event_stream_message(text, event_id)

    def send_text(self, text: str) -> None:
        """Write one lifecycle event (no id) whole, or raise OSError (TimeoutError after the send timeout)."""
        self.send_frame(event_stream_message(text, None))

    def close(self, code: int, reason: str) -> None:
        """End the response: a comment saying why (for people reading the stream), then the end of the body."""
        if not self._connected:
            return
        self._connected = False
        self._woken.set()
        self._write(f": closed {code} {reason}\n\n".encode())
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def _ping(self) -> None:
        """Send nothing: an event stream has no ping (its ping interval is 0, so this is never due)."""

    def _read(self) -> None:
        """End the stream when the client closes its side or sends anything at all (it has nothing to send)."""
        try:
            data = self._sock.recv(1)
        except TimeoutError:
            data = None  # nothing there after all: watch again
        except OSError:
            data = b""
        if data is None:
            self._watch.arm()
            return
        self._connected = False
