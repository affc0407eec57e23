"""The one module that knows simple_websocket: a socket VORA can write to, wait on and close."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Protocol

from wsproto.events import CloseConnection, TextMessage
from wsproto.utilities import LocalProtocolError


class SocketClosed(ConnectionError):
    """The peer or the reader closed the socket: nothing can be written any more."""


class Transport(Protocol):
    """What a Connection needs from a WebSocket: send, close, wait and be woken."""

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

    def close(self, code: int, reason: str) -> None:
        """Finish any partly written frame, send a close frame, and stop; raise OSError when it cannot."""
        ...

    def abort(self) -> None:
        """Cut the TCP connection when no close frame can get through."""
        ...

    def wait(self, timeout: float) -> None:
        """Block until wake() is called, the peer sends something or closes, or timeout seconds pass."""
        ...

    def wake(self) -> None:
        """Wake a wait() in progress (or make the next one return at once); never blocks."""
        ...

    def discard_input(self) -> None:
        """Drop the messages the peer sent (VORA clients have nothing to say)."""
        ...


class SerialSocket:
    """A socket whose writes never interleave and never end mid-frame unnoticed.

    simple_websocket's reader thread writes pongs and close replies with `sock.send`,
    which may write part of a frame; all writes go through `write` here instead, under
    one lock, and what a timed-out write left unsent goes out first next time.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._unsent = b""
        self.send_timeout: float | None = None

    def write(self, data: bytes) -> None:
        """Write data after whatever an earlier write left unsent, within the send timeout."""
        with self._lock:
            if self._unsent:
                data = self._unsent + data
            offset = 0
            try:
                offset = self._sock.send(data)  # the usual case: the whole frame in one call
                if offset < len(data):
                    view = memoryview(data)
                    deadline = None if self.send_timeout is None else time.monotonic() + self.send_timeout
                    while offset < len(view):
                        if deadline is not None and time.monotonic() > deadline:
                            raise TimeoutError("send timed out with a frame partly written")
                        offset += self._sock.send(view[offset:])
            except OSError:
                self._unsent = bytes(data[offset:])
                raise
            self._unsent = b""

    def send(self, data: bytes) -> int:
        """Write data whole (simple_websocket's reader thread calls this)."""
        self.write(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        # recv, close, fileno, settimeout...: the reader thread uses the real socket's.
        return getattr(self._sock, name)


class SimpleWebsocketTransport:
    """Adapt a simple_websocket Server (its reader thread answers pings and reads closes) to Transport."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._raw: socket.socket = ws.sock
        self._socket = SerialSocket(self._raw)
        # From here on the reader thread writes through the serialising socket too.
        ws.sock = self._socket

    @property
    def connected(self) -> bool:
        """Tell whether frames can still be written."""
        return bool(self._ws.connected)

    def configure(self, *, send_timeout: float, send_buffer: int) -> None:
        """Bound each write by send_timeout seconds, and size the kernel send buffer (0: the OS default)."""
        self._socket.send_timeout = send_timeout
        self._raw.settimeout(send_timeout)
        if send_buffer:
            # A small kernel buffer makes a stalled client show up in the outbox, and bounds memory.
            self._raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)

    def send_text(self, text: str) -> None:
        """Write one text message whole, or raise OSError (TimeoutError after the send timeout)."""
        if not self._ws.connected:
            raise SocketClosed("the socket is closed")
        self._socket.write(self._ws.ws.send(TextMessage(data=text)))

    def close(self, code: int, reason: str) -> None:
        """Finish any partly written frame, send a close frame, and stop; raise OSError when it cannot."""
        if not self._ws.connected:
            return
        self._ws.connected = False
        try:
            frame = self._ws.ws.send(CloseConnection(code, reason))
        except LocalProtocolError:
            return  # the peer's close frame came first: the reader thread has answered it
        self._socket.write(frame)

    def abort(self) -> None:
        """Cut the TCP connection when no close frame can get through."""
        self._ws.connected = False
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_RDWR)

    def wait(self, timeout: float) -> None:
        """Block until wake() is called, the peer sends something or closes, or timeout seconds pass."""
        self._ws.event.wait(timeout=max(0.0, timeout))
        self._ws.event.clear()

    def wake(self) -> None:
        """Wake a wait() in progress (or make the next one return at once); never blocks."""
        self._ws.event.set()

    def discard_input(self) -> None:
        """Drop the messages the peer sent (VORA clients have nothing to say)."""
        self._ws.input_buffer.clear()
