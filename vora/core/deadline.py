"""Bound a whole HTTP exchange in time: a peer trickling its answer holds the caller no longer than its deadline.

A socket timeout bounds each wait only, so a peer sending a byte now and then keeps a read going for as long
as it likes. A deadline cuts the connections opened under it when its time is up; the read under way then
fails with an OSError. Connections register through the opener that `opener_with_deadlines` builds.
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import socket
import threading
import urllib.request
from collections.abc import Iterator


def cut(sock: socket.socket) -> None:
    """Shut a connection down both ways, waking whatever waits on it with an OSError (TLS included)."""
    # socket.socket's own shutdown, not an SSLSocket's: that one unwraps the TLS object under a read still waiting.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Deadline:
    """Cut the connections of one exchange when its time is up."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._running = True
        self.passed = False  # the time was up before the exchange ended: its connections were cut
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        """Cut this connection when the time is up (at once if it is)."""
        with self._lock:
            if not self.passed:
                self._sockets.append(sock)
                return
        cut(sock)

    def _expire(self) -> None:
        with self._lock:
            if not self._running:
                return
            self.passed = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            cut(sock)

    def end(self) -> None:
        """End the exchange: nothing is cut after this."""
        with self._lock:
            self._running = False
            self._sockets = []
        self._timer.cancel()


# The deadline of the exchange this thread (or greenlet) is making, which its connections register with.
_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("vora_exchange_deadline", default=None)


@contextlib.contextmanager
def within(seconds: float) -> Iterator[Deadline]:
    """Run the block's exchanges under one deadline; ask it afterwards whether the time ran out."""
    deadline = Deadline(seconds)
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        deadline.end()
        _CURRENT.reset(token)


def _watched(sock: socket.socket | None) -> None:
    """Hand a connection just opened to the deadline of the exchange under way, if any."""
    deadline = _CURRENT.get()
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _WatchedConnection(http.client.HTTPConnection):
    """A connection that the exchange's deadline can cut once it is open."""

    def connect(self) -> None:
        """Connect, then hand the socket to the exchange's deadline."""
        super().connect()
        _watched(self.sock)


class _WatchedTLSConnection(http.client.HTTPSConnection):
    """The TLS connection the exchange's deadline can cut once it is open."""

    def connect(self) -> None:
        """Connect and shake hands, then hand the socket to the exchange's deadline."""
        super().connect()
        _watched(self.sock)


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_WatchedConnection, req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_WatchedTLSConnection, req)


def opener_with_deadlines(*handlers: urllib.request.BaseHandler) -> urllib.request.OpenerDirector:
    """Build a urllib opener (the usual *_proxy variables honoured) whose connections the deadlines can cut."""
    return urllib.request.build_opener(*handlers, _WatchedHTTPHandler, _WatchedHTTPSHandler)
