"""The one module that knows WebSockets' wire format (wsproto's frames): a socket VORA can write to, wait on and close.

The upgrade is answered here, from headers the endpoint has already checked: the 101 in one write,
then wsproto's frame protocol directly, with no HTTP parser behind it (the request was parsed once,
by gunicorn). From there on the socket's work (writing frames, and reading what the peer sent when
the reactor says so, answering pings and closes) runs in one greenlet at a time: its request's,
until the socket first parks, then one started by each wake-up (park). The one exception: under
gevent the hub's greenlet may write a live event's frame itself (try_send) when no write is under
way and the kernel takes it without waiting. No thread is started per socket, and pings come from
the worker's due-time queue, not a timer per socket.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import gevent.ssl
from wsproto.connection import Connection as FrameConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from vora.ws.reactor import Reactor, Signal, Wakeup

RECEIVE_BYTES = 4096  # what simple_websocket read at a time, when it served these sockets
PING_TIMEOUT_REASON = "Ping/Pong timeout"  # simple_websocket's words, kept for clients that log them
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
# The 101 wsproto wrote through h11, byte for byte: no Sec-WebSocket-Protocol (VORA names none) and no
# Sec-WebSocket-Extensions (permessage-deflate keeps ~90 KB of zlib state per socket: never negotiated).
SWITCHING_PROTOCOLS = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
TOO_BIG_REASON = "Message is too big"
CLOSE_CLIENT_FLOOD = 4029  # the client sent more than it may (a 4xxx code: VORA's own, like 429)
CLIENT_FLOOD_REASON = "client sent more than its budget; clients send only pongs, pings and small keep-alives"
# Each read of client bytes is charged at least this much against the byte budget: a peer that
# trickles a byte per packet pays for the wake-up and the read, not only for the byte.
MIN_READ_CHARGE = 128
SECONDS_PER_MINUTE = 60.0

Metric = Callable[[str, int], None]


@dataclass(frozen=True)
class ClientBudget:
    """What a client may send on the event socket: frames and bytes per minute, refilled continuously."""

    frames_per_minute: int = 60
    bytes_per_minute: int = 65536


class _Allowance:
    """A token bucket for one socket: full at the start, holding at most a minute's worth."""

    __slots__ = ("_at", "_bytes", "_frames", "_limits")

    def __init__(self, limits: ClientBudget) -> None:
        self._limits = limits
        self._frames = float(limits.frames_per_minute)
        self._bytes = float(limits.bytes_per_minute)
        self._at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        share = (now - self._at) / SECONDS_PER_MINUTE
        self._at = now
        limits = self._limits
        self._frames = min(float(limits.frames_per_minute), self._frames + share * limits.frames_per_minute)
        self._bytes = min(float(limits.bytes_per_minute), self._bytes + share * limits.bytes_per_minute)

    def take_bytes(self, count: int) -> bool:
        """Charge a read of count bytes; tell whether the client is still within its budget."""
        self._refill()
        self._bytes -= max(count, MIN_READ_CHARGE)
        return self._bytes >= 0

    def take_frame(self) -> bool:
        """Charge one frame (or part of a message, as wsproto hands it over); tell whether it fits the budget."""
        self._frames -= 1  # refilled by the read that brought it
        return self._frames >= 0


TLS_SOCKETS = (ssl.SSLSocket, gevent.ssl.SSLSocket)
FINAL_TEXT = 0x81  # FIN + opcode 1 (text); a server's frames are never masked


def text_frame(text: str) -> bytes:
    """Return the one WebSocket frame that carries text whole: the same bytes for every socket (no extension)."""
    data = text.encode()
    size = len(data)
    if size < 126:
        return bytes((FINAL_TEXT, size)) + data
    if size < 1 << 16:
        return struct.pack("!BBH", FINAL_TEXT, 126, size) + data
    return struct.pack("!BBQ", FINAL_TEXT, 127, size) + data


def accept_token(key: str) -> bytes:
    """Return the Sec-WebSocket-Accept that answers a Sec-WebSocket-Key: base64(SHA-1(key + the RFC's GUID))."""
    # SHA-1 because RFC 6455 says so: the value proves the server read the handshake, it protects nothing.
    digest = hashlib.sha1(key.encode("ascii") + ACCEPT_GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest)


def switching_protocols(key: str) -> bytes:
    """Return the whole 101 response that accepts the upgrade offering key."""
    return SWITCHING_PROTOCOLS + b"Sec-WebSocket-Accept: " + accept_token(key) + b"\r\n\r\n"


Framing = FrameConnection  # a server WebSocket's frame protocol, for the modules that only pass one on


class SocketClosed(ConnectionError):
    """The peer or the reader closed the socket: nothing can be written any more."""


class Transport(Protocol):
    """What a Connection needs from a WebSocket or an event stream: frame, send, close, wait and be woken."""

    kind: str  # the transport's name in metrics ("websocket", "sse"); sockets of one kind share a live event's frame

    def frame(self, text: str, event_id: str | None) -> bytes:
        """Return the bytes that carry one event's JSON text (with its eventId, where the framing has a place)."""
        ...

    @property
    def connected(self) -> bool:
        """Tell whether frames can still be written."""
        ...

    def configure(self, *, send_timeout: float, send_buffer: int) -> None:
        """Bound each write by send_timeout seconds, and size the kernel send buffer (0: the OS default)."""
        ...

    def send_text(self, text: str) -> None:
        """Write one text message whole, or raise OSError (TimeoutError after the send timeout)."""
        ...

    def send_frame(self, frame: bytes) -> None:
        """Write one frame made by text_frame whole, or raise OSError (TimeoutError after the send timeout)."""
        ...

    def try_send(self, frame: bytes) -> bool:
        """Write a frame from another greenlet without blocking, if no write is under way; tell whether it was."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Finish any partly written frame, send a close frame, and stop; raise OSError when it cannot."""
        ...

    def abort(self) -> None:
        """Cut the TCP connection when no close frame can get through."""
        ...

    def release(self) -> None:
        """Stop watching the socket; call once its greenlet is done with it, before the server closes it."""
        ...

    def wait(self, until: float) -> None:
        """Block until wake() is called, the peer sends something or closes, or the monotonic time until."""
        ...

    def sleep(self, until: float) -> None:
        """Block until a wake-up, as wait() does, leaving what woke the socket to serve_wake()."""
        ...

    def serve_wake(self) -> None:
        """Do what woke the socket: write the rest of a frame, read what the peer sent, ping when due."""
        ...

    @property
    def can_park(self) -> bool:
        """Tell whether the socket can wait in the reactor with no greenlet of its own (under gevent)."""
        ...

    def park(self, until: float, resume: Callable[[], None]) -> bool:
        """Leave the socket to the reactor until a wake or until, then run resume in a new greenlet; False if woken."""
        ...

    def wake(self) -> None:
        """Wake a wait() in progress (or make the next one return at once); never blocks."""
        ...


class WebsocketTransport:
    """A server WebSocket served by one greenlet at a time (none while parked): writes whole, reads when woken.

    Writes come from the socket's greenlet (its writes and its answers to pings and closes), and
    under gevent also from the hub's, which writes a live frame at once when the socket's greenlet
    is not in a write and the kernel takes it without waiting: that spares a greenlet switch per
    delivery. Frames never interleave: what a write left unsent goes out first next time, so a
    close frame never lands inside a cut frame.
    """

    kind = "websocket"
    __slots__ = (
        "_allowance",
        "_connected",
        "_incoming_bytes",
        "_max_message_size",
        "_metric",
        "_next_ping",
        "_ping_interval",
        "_pong_received",
        "_protocol",
        "_reactor",
        "_readable",
        "_send_now",
        "_send_timeout",
        "_sock",
        "_timer_at",
        "_unsent",
        "_watch",
        "_woken",
        "_writing",
    )

    def __init__(
        self,
        sock: socket.socket,
        protocol: FrameConnection,
        reactor: Reactor,
        *,
        ping_interval: float,
        max_message_size: int,
        client_budget: ClientBudget | None = None,
        on_metric: Metric = lambda name, n: None,
    ) -> None:
        self._sock = sock
        self._protocol = protocol
        self._reactor = reactor
        self._woken: Signal = reactor.signal()
        self._watch = reactor.watch_readable(sock, self._on_readable)
        self._readable = False
        self._connected = True
        self._unsent = b""
        self._writing = False  # in _write, which may wait for the peer: nobody else may write meanwhile
        # A gevent socket's send with a timeout of 0 never waits: BlockingIOError when the kernel buffer is full.
        # Not over TLS: a write OpenSSL could not finish must be retried with the same bytes, not another frame.
        direct = reactor.cooperative and not isinstance(sock, TLS_SOCKETS)
        self._send_now: Callable[[bytes], int] | None = (
            (lambda frame: sock.send(frame, 0, 0.0)) if direct else None  # type: ignore[call-arg]  # gevent's send takes a timeout
        )
        self._send_timeout: float | None = None
        self._ping_interval = ping_interval
        self._next_ping = time.monotonic() + ping_interval if ping_interval else math.inf
        self._pong_received = True
        self._timer_at = math.inf  # the earliest time this transport has in the reactor's queue
        self._incoming_bytes = 0  # of the message the peer is sending, against the size limit
        self._max_message_size = max_message_size
        self._allowance = _Allowance(client_budget or ClientBudget())
        self._metric = on_metric
        self._watch.arm()

    @staticmethod
    def frame(text: str, event_id: str | None) -> bytes:
        """Return the WebSocket text frame that carries the event (the eventId is inside the JSON)."""
        return text_frame(text)

    @classmethod
    def upgrade(
        cls,
        sock: socket.socket,
        key: str,
        reactor: Reactor,
        *,
        ping_interval: float,
        max_message_size: int,
        client_budget: ClientBudget | None = None,
        on_metric: Metric = lambda name, n: None,
    ) -> WebsocketTransport:
        """Accept the upgrade of a request whose headers were checked (key: its Sec-WebSocket-Key) and serve it.

        The 101 goes out in one write; no subprotocol or extension is ever agreed, so the frames
        are plain RFC 6455 ones (a frame with RSV1 set is a protocol error, as before).
        """
        sock.sendall(switching_protocols(key))
        return cls(
            sock,
            FrameConnection(ConnectionType.SERVER),
            reactor,
            ping_interval=ping_interval,
            max_message_size=max_message_size,
            client_budget=client_budget,
            on_metric=on_metric,
        )

    @property
    def connected(self) -> bool:
        """Tell whether frames can still be written."""
        return self._connected

    def configure(self, *, send_timeout: float, send_buffer: int) -> None:
        """Bound each write by send_timeout seconds, and size the kernel send buffer (0: the OS default)."""
        self._send_timeout = send_timeout
        self._sock.settimeout(send_timeout)
        if send_buffer:
            # A small kernel buffer makes a stalled client show up in the outbox, and bounds memory.
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)

    def send_text(self, text: str) -> None:
        """Write one text message whole, or raise OSError (TimeoutError after the send timeout)."""
        self.send_frame(text_frame(text))

    def send_frame(self, frame: bytes) -> None:
        """Write one frame made by text_frame whole, or raise OSError (TimeoutError after the send timeout)."""
        if not self._connected:
            raise SocketClosed("the socket is closed")
        self._write(frame)

    def try_send(self, frame: bytes) -> bool:
        """Write a frame from another greenlet without blocking, if no write is under way; tell whether it was.

        A frame the kernel took only in part counts as written: the socket's greenlet is woken to
        write the rest before anything else.
        """
        send_now = self._send_now
        if send_now is None or self._writing or self._unsent or not self._connected:
            return False
        try:
            sent = send_now(frame)
        except OSError:
            return False  # a full buffer (the greenlet waits for it) or a broken socket (its next write finds out)
        if sent < len(frame):
            self._unsent = frame[sent:]
            self._woken.set()
        return True

    def close(self, code: int, reason: str) -> None:
        """Finish any partly written frame, send a close frame, and stop; raise OSError when it cannot."""
        if not self._connected:
            return
        self._connected = False
        self._woken.set()
        try:
            frame = self._protocol.send(CloseConnection(code, reason))
        except LocalProtocolError:
            return  # the peer's close frame came first and was answered
        self._write(frame)

    def abort(self) -> None:
        """Cut the TCP connection when no close frame can get through."""
        self._connected = False
        self._woken.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """Stop watching the socket; call once its greenlet is done with it, before the server closes it."""
        self._connected = False
        self._watch.close()

    def wait(self, until: float) -> None:
        """Block until wake() is called, the peer sends something or closes, or the monotonic time until."""
        self.sleep(until)
        self.serve_wake()

    def sleep(self, until: float) -> None:
        """Block until a wake-up, as wait() does, leaving what woke the socket to serve_wake()."""
        self._schedule(until)
        if not self._woken.is_set():
            self._woken.wait()

    def serve_wake(self) -> None:
        """Do what woke the socket: write the rest of a frame, read what the peer sent, ping when due."""
        self._woken.clear()
        if self._unsent and self._connected:
            self._write(b"")  # the rest of a frame the hub's greenlet wrote in part
        if self._readable:
            self._readable = False
            self._read()
        if self._connected and time.monotonic() >= self._next_ping:
            self._ping()

    @property
    def can_park(self) -> bool:
        """Tell whether the socket can wait in the reactor with no greenlet of its own (under gevent)."""
        return self._reactor.cooperative

    def park(self, until: float, resume: Callable[[], None]) -> bool:
        """Leave the socket to the reactor until a wake or until, then run resume in a new greenlet.

        Return False, parking nothing, when a wake is pending already: the caller goes on itself.
        """
        self._schedule(until)
        woken = self._woken
        if not isinstance(woken, Wakeup):
            woken = self._woken = Wakeup(woken.is_set())
        return woken.park(resume)

    def _schedule(self, until: float) -> None:
        due = min(until, self._next_ping)
        if due < self._timer_at:
            self._timer_at = due
            self._reactor.call_at(due, self._on_due)

    def wake(self) -> None:
        """Wake a wait() in progress (or make the next one return at once); never blocks."""
        self._woken.set()

    # Called by the reactor: must never block.

    def _on_readable(self) -> None:
        self._readable = True
        self._woken.set()

    def _on_due(self) -> None:
        self._timer_at = math.inf
        self._woken.set()

    # Internals, run by the socket's greenlet.

    def _write(self, data: bytes) -> None:
        """Write data after whatever an earlier write left unsent, within the send timeout."""
        if self._unsent:
            data = self._unsent + data
        offset = 0
        self._writing = True
        try:
            offset = self._sock.send(data)  # the usual case: the whole frame in one call
            if offset < len(data):
                view = memoryview(data)
                timeout = self._send_timeout
                deadline = None if timeout is None else time.monotonic() + timeout
                while offset < len(view):
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError("send timed out with a frame partly written")
                    offset += self._sock.send(view[offset:])
        except OSError:
            self._unsent = bytes(data[offset:])
            raise
        finally:
            self._writing = False
        self._unsent = b""

    def _ping(self) -> None:
        """Ping the peer, or close the socket when it never answered the previous ping (as simple_websocket did)."""
        if not self._pong_received:
            self.close(CloseReason.POLICY_VIOLATION, PING_TIMEOUT_REASON)
            return
        self._pong_received = False
        self._write(self._protocol.send(Ping()))
        self._next_ping = max(time.monotonic(), self._next_ping) + self._ping_interval

    def _read(self) -> None:
        """Read what the peer sent (the reactor saw it arrive) and answer it; the message data is dropped."""
        try:
            data = self._sock.recv(RECEIVE_BYTES)
        except TimeoutError:
            data = None  # nothing there after all: watch again
        except OSError:
            data = b""
        if data == b"":
            self._connected = False  # the peer is gone
            return
        if data is not None:
            if not self._allowance.take_bytes(len(data)):
                self._close_flooded()  # before parsing: what is over the budget costs no more CPU
                return
            self._protocol.receive_data(data)
            self._answer()
        if self._connected:
            self._watch.arm()

    def _close_flooded(self) -> None:
        self._metric("client_flood", 1)
        self.close(CLOSE_CLIENT_FLOOD, CLIENT_FLOOD_REASON)

    def _answer(self) -> None:
        # wsproto parses lazily: leaving the loop early leaves the rest of the read unparsed.
        for event in self._protocol.events():
            if not isinstance(event, CloseConnection) and not self._allowance.take_frame():
                self._close_flooded()
                return
            if isinstance(event, CloseConnection):
                # Also how wsproto reports a frame that breaks the protocol (code 1002).
                self._connected = False
                with contextlib.suppress(LocalProtocolError):
                    self._write(self._protocol.send(event.response()))
                return
            if isinstance(event, Ping):
                self._write(self._protocol.send(event.response()))
            elif isinstance(event, Pong):
                self._pong_received = True
            elif isinstance(event, (TextMessage, BytesMessage)):
                # VORA clients have nothing to say: only the size of what they send is checked.
                self._incoming_bytes += len(event.data)
                if self._max_message_size and self._incoming_bytes > self._max_message_size:
                    self.close(CloseReason.MESSAGE_TOO_BIG, TOO_BIG_REASON)
                    return
                if event.message_finished:
                    self._incoming_bytes = 0
