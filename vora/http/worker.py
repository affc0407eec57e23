"""The gunicorn worker VORA runs: gevent, with bounded request reads and gunicorn's refusals in VORA's shape."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import resource
import signal
import socket
import ssl
import struct
import sys
import termios
import time
import warnings
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ClassVar

import gevent
import gevent.monkey
import gevent.ssl
import gunicorn.http
import gunicorn.http.wsgi
from gevent.server import StreamServer
from gunicorn import util
from gunicorn.http.errors import (
    ConfigurationProblem,
    ForbiddenProxyRequest,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
    UnsupportedTransferCoding,
)
from gunicorn.workers import ggevent
from gunicorn.workers.ggevent import GeventWorker

from vora.core.error_shape import RequestBodyTimeout, RequestBodyTooLarge, RequestReadTimeout, clip, error_body
from vora.core.settings import Settings
from vora.http.bodies import ServedRequest, serving
from vora.http.framing import BoundedRequestParser

log = logging.getLogger("vora.http")

KEPT_POLL_SECONDS = 0.05  # how often a stopping worker looks whether the connections the app kept are closed
KEPT_CUT_SECONDS = 1.0  # how long the app may take to end kept connections cut at the graceful timeout
# Modules the master loads for its own hooks that keep the ssl module's unpatched SSLContext, which
# no worker uses: `import redis` (the metrics server's client) imports redis.asyncio with it.
UNUSED_UNPATCHED_SSL = ("redis.asyncio.",)
# How long a connection may keep the worker's CPU (reading, or serving pipelined requests) before
# it lets the others run.
TURN_SECONDS = 0.002

# What gunicorn's own refusals answer; any other parse error is a 400.
REFUSALS: tuple[tuple[type[Exception], int, str], ...] = (
    (RequestReadTimeout, 408, ""),
    (RequestBodyTooLarge, 413, ""),
    (LimitRequestLine, 414, "The request line is too long"),
    (LimitRequestHeaders, 431, "The request's header fields are too large or too many"),
    (UnsupportedTransferCoding, 501, "The request's Transfer-Encoding is not supported"),
    (ForbiddenProxyRequest, 403, "Proxy requests are not accepted from this address"),
    (ConfigurationProblem, 500, "The server is misconfigured"),
    (ParseException, 400, "The request is not valid HTTP/1.1"),
)


def refusal_of(exc: BaseException) -> tuple[int, str] | None:
    """Return the status and message for an error gunicorn met reading a request, or None if unexpected."""
    for kind, status, summary in REFUSALS:
        if isinstance(exc, kind):
            return status, f"{summary}: {clip(str(exc))}" if summary else str(exc)
    return None


def error_response_bytes(status: int, message: str) -> bytes:
    """Render a complete HTTP/1.1 error response, body in the VORA error shape, that closes the connection."""
    body = json.dumps(error_body(status, message)).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class TimedReads:
    """Wrap a client socket so that reads give up and take turns: a head within the timeout, a body within its own."""

    # The wait for the next request on a kept-alive connection has no bound here (gunicorn's keepalive
    # is that bound); the clock of a head starts at its first byte, or on accept for the first request.
    # A gevent recv with data waiting returns without switching: a client that keeps the socket full
    # would keep the worker to itself, so a connection that has run for a turn lets the others run.

    def __init__(self, sock: Any, timeout: float, body_timeout: float = 30.0, body_limit: int = 64 * 1024) -> None:
        self.socket = sock
        self.body_limit = body_limit  # what BoundedRequestParser counts a chunked body's bytes against
        self._timeout = timeout
        self._body_timeout = body_timeout
        self._idle = False
        self._head_deadline: float | None = time.monotonic() + timeout
        self._body_deadline: float | None = None
        self._hub = gevent.get_hub()
        self._loop = self._hub.loop
        self._turn_iteration = getattr(self._loop, "iteration", None)
        self._turn_started = time.monotonic()
        self._kept = False  # the app keeps the connection past its request: gunicorn must not close it

    def __getattr__(self, name: str) -> Any:
        return getattr(self.socket, name)

    def keep(self) -> None:
        """Leave the connection open when gunicorn is done with it: the app closes it."""
        self._kept = True

    def close(self) -> None:
        """Close the connection, unless the app kept it."""
        if not self._kept:
            self.socket.close()

    def recv(self, size: int) -> bytes:
        """Read from the client, raising RequestReadTimeout when it keeps the server waiting too long."""
        self.take_turns()
        if self._idle:
            data: bytes = self.socket.recv(size)
            if data:
                self._idle = False
                self._head_deadline = time.monotonic() + self._timeout
            return data
        wait, timeout = self._wait()
        with gevent.Timeout(wait, timeout):
            received: bytes = self.socket.recv(size)
            return received

    def _wait(self) -> tuple[float, RequestReadTimeout]:
        """Return how long the next read may wait, and what to raise when it waits longer."""
        now = time.monotonic()
        if self._head_deadline is not None:
            wait, timeout = self._head_deadline - now, RequestReadTimeout(self._timeout)
        elif self._body_deadline is not None and self._body_deadline - now < self._timeout:
            wait, timeout = self._body_deadline - now, RequestBodyTimeout(self._body_timeout)
        else:
            wait, timeout = self._timeout, RequestReadTimeout(self._timeout)
        if wait <= 0:
            raise timeout
        return wait, timeout

    def take_turns(self) -> None:
        """Let the worker's other greenlets run when this connection has kept the CPU for a turn."""
        # The event loop only iterates while the hub runs, so a new iteration means this connection
        # has waited since the turn started. gevent.sleep(0) only runs callbacks, and sockets may wait
        # for 50 of them; a timer already due makes the loop poll them once, without a wait (libev).
        iteration = getattr(self._loop, "iteration", None)
        now = time.monotonic()
        if iteration is not None and iteration != self._turn_iteration:
            self._turn_iteration, self._turn_started = iteration, now
        elif now - self._turn_started >= TURN_SECONDS:
            with self._loop.timer(0) as due:
                self._hub.wait(due)
            self._turn_iteration, self._turn_started = getattr(self._loop, "iteration", None), time.monotonic()

    def reading_body(self) -> None:
        """Switch from the head's deadline to the body's: a bound on each pause and one on the whole body."""
        self._head_deadline = None
        self._body_deadline = time.monotonic() + self._body_timeout

    def between_requests(self) -> None:
        """Wait for the next request without a bound of its own."""
        self._idle = True
        self._body_deadline = None


class KeepingStreamServer(StreamServer):  # type: ignore[misc] # gevent's server is untyped
    """gevent's server, except that it leaves open the client sockets the app kept past their request."""

    kept: ClassVar[set[Any]] = set()  # this worker process's kept sockets, until the app closes them

    def do_close(self, sock: Any, *args: Any) -> None:
        """Close a socket whose handler returned, unless the app kept it."""
        if sock not in self.kept:
            super().do_close(sock, *args)


class _KeptConnection:
    """Close a connection the app kept past its request, once."""

    __slots__ = ("_socket",)

    def __init__(self, sock: Any) -> None:
        self._socket = sock
        KeepingStreamServer.kept.add(sock)

    def __call__(self) -> None:
        sock = self._socket
        if sock in KeepingStreamServer.kept:
            KeepingStreamServer.kept.discard(sock)
            util.close(sock)


def unsent_bytes(sock: Any) -> int | None:
    """Return how many bytes written to a TCP socket its peer has not yet acknowledged, or None if unknown."""
    try:
        queue = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # SIOCOUTQ on Linux
    except (OSError, AttributeError):
        return None
    unsent: int = struct.unpack("i", queue)[0]
    return unsent


class AnswerNotTaken(OSError):
    """The client took nothing of an answer being written for the stall bound: it is cut, not waited for."""


class HeadWithBody:
    """A client socket that holds a response's head until the first write of its body, to send both in one.

    A write whose client takes nothing of it for stall_seconds, twice in a row (the kernel's queue
    for it unmoved), raises AnswerNotTaken: a client that stops reading its answer (or pipelines
    requests without reading any) would otherwise keep the greenlet and the answer for good.
    """

    # gunicorn writes a response's head and its body in two sends: on a keep-alive connection with
    # TCP_NODELAY that is two packets, two wake-ups of the client and two syscalls per answer.

    __slots__ = ("_head", "_holding", "_stall_seconds", "socket")

    def __init__(self, sock: Any, stall_seconds: float | None = None) -> None:
        self.socket = sock
        self._head = b""
        self._holding = False
        self._stall_seconds = stall_seconds

    def __getattr__(self, name: str) -> Any:
        # Anything but sendall (sendfile, fileno, close) sees the head on the wire first.
        self.flush()
        return getattr(self.socket, name)

    def hold(self, holding: bool) -> None:
        """Hold what is sent while holding is on (the head) until the next send or flush."""
        self._holding = holding

    def sendall(self, data: bytes) -> None:
        """Send data, after the held head in the same write; while holding, keep it for later."""
        if self._holding:
            self._head += data
            return
        if self._head:
            data, self._head = self._head + data, b""
        self._send_all(data)

    def flush(self) -> None:
        """Send the held head, if any."""
        if self._head:
            head, self._head = self._head, b""
            self._send_all(head)

    def _send_all(self, data: bytes) -> None:
        """Send all of data, raising AnswerNotTaken when the client takes none of it for the stall bound."""
        stall = self._stall_seconds
        if stall is None:
            self.socket.sendall(data)
            return
        view = memoryview(data)
        sent = 0
        queued: int | None = None  # the kernel's unsent bytes when the last wait ran out
        while sent < len(view):
            taken = None
            with gevent.Timeout(stall, False):  # one send: it returns as soon as the kernel takes any of it
                taken = self.socket.send(view[sent:])
            if taken is not None:
                sent, queued = sent + taken, None
                continue
            # The kernel wakes a writer only once half its queue has gone: a client reading slowly
            # but steadily drains it without waking us, so the queue itself tells whether it moved.
            unsent = unsent_bytes(self.socket)
            if unsent is None or (queued is not None and unsent >= queued):
                raise AnswerNotTaken(f"the client took none of its answer for {stall:g} s")
            queued = unsent


class OneWriteResponse(gunicorn.http.wsgi.Response):  # type: ignore[misc] # gunicorn is untyped
    """gunicorn's response, writing its head together with the first chunk of its body.

    After every write and at close, whatever was held is on the wire, as with gunicorn's own.
    """

    def __init__(self, req: Any, sock: Any, cfg: Any, stall_seconds: float | None = None) -> None:
        super().__init__(req, HeadWithBody(sock, stall_seconds), cfg)
        self._bounded = stall_seconds is not None

    def sendfile(self, respiter: Any) -> bool:
        """Send a file through write() when writes are bounded (the kernel's sendfile waits for a client unbounded)."""
        return False if self._bounded else bool(super().sendfile(respiter))

    def send_headers(self) -> None:
        """Build the head as gunicorn does, held for the body's first write."""
        if self.headers_sent:
            return
        self.sock.hold(True)
        try:
            super().send_headers()
        finally:
            self.sock.hold(False)

    def write(self, arg: bytes) -> None:
        """Write a chunk of the body, the head in front of the first one."""
        try:
            super().write(arg)
        finally:
            self.sock.flush()  # a write gunicorn skips (an empty chunk) or refuses still sends the head, as before

    def close(self) -> None:
        """End the response, sending a held head (an answer without a body)."""
        super().close()
        self.sock.flush()


def unpatched_ssl_users() -> list[str]:
    """Name the loaded modules that hold ssl's unpatched SSLContext or a subclass, but those no worker uses."""
    original = gevent.monkey.get_original("ssl", "SSLContext")
    if original is getattr(sys.modules.get("ssl"), "SSLContext", None):
        return []  # ssl is not patched: nothing can hold a stale class

    def unpatched(value: object) -> bool:
        # The class itself, or a subclass of it that is not gevent's (which subclasses it too).
        return isinstance(value, type) and issubclass(value, original) and not issubclass(value, gevent.ssl.SSLContext)

    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name not in {"ssl", "gevent.ssl", "gevent._ssl3"}
        and not name.startswith(UNUSED_UNPATCHED_SSL)
        and any(unpatched(value) for value in list(getattr(module, "__dict__", {}).values()))
    )


class VoraWorker(GeventWorker):  # type: ignore[misc] # gunicorn is untyped
    """Gevent worker that bounds request reads (VORA_HTTP_*_TIMEOUT, chunked framing) and answers refusals as JSON."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = Settings.from_env()
        self.read_timeout = settings.http_read_timeout
        self.body_timeout = settings.http_body_timeout
        self.body_limit = settings.max_body_bytes
        self.server_api_port = settings.server_api_port if settings.server_api_enabled else None
        self.server_api_body_limit = settings.server_api_max_body_bytes

    def init_process(self) -> None:
        """Parse requests with VORA's bounded parser in this worker, then run it."""
        # gunicorn's async worker builds each connection's parser as gunicorn.http.RequestParser,
        # and each response as gunicorn.http.wsgi.Response (in gunicorn.http.wsgi.create).
        gunicorn.http.RequestParser = BoundedRequestParser
        # The app keeps some connections past their request (its WebSockets, parked in its reactor with
        # no greenlet of their own): the server must not close them when their handler returns.
        ggevent.StreamServer = KeepingStreamServer
        gunicorn.http.wsgi.Response = functools.partial(OneWriteResponse, stall_seconds=self.read_timeout)
        super().init_process()

    def patch(self) -> None:
        """Patch the worker for gevent, warning of unpatched ssl only where the worker could use it."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            super().patch()
        for warning in caught:
            late_ssl = warning.category is gevent.monkey.MonkeyPatchWarning and str(warning.message).startswith(
                "Monkey-patching ssl after ssl has already been imported"
            )
            if late_ssl and not unpatched_ssl_users():
                continue  # gevent names the modules the master loaded; none of them runs in a worker
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)

    def run(self) -> None:
        """Serve until told to stop, then give the connections the app kept the graceful timeout to close."""
        super().run()
        # gunicorn's pool does not see the kept connections: wait for the app to close them (draining).
        self._wait_for_kept(self.cfg.graceful_timeout)
        if KeepingStreamServer.kept:
            # What gunicorn's forced stop does to its handlers: a write that still waits for its peer
            # fails, a parked socket sees its end, and the app ends each (releasing what it held).
            for sock in list(KeepingStreamServer.kept):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._wait_for_kept(KEPT_CUT_SECONDS)

    def _wait_for_kept(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while KeepingStreamServer.kept and time.monotonic() < deadline:
            self.notify()
            gevent.sleep(KEPT_POLL_SECONDS)

    def drain_on_sigterm(self, drain: Callable[[], None]) -> None:
        """Make SIGTERM start draining the app before gunicorn's own graceful exit."""
        previous = signal.getsignal(signal.SIGTERM)

        def drain_then_exit(signum: int, frame: Any) -> None:
            # A signal handler runs in gevent's loop callback: blocking there is forbidden.
            gevent.spawn(drain)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, drain_then_exit)

    def log_greenlet_failures(self, log: logging.Logger) -> None:
        """Log a greenlet that died of an exception through log (one line), not as gevent's text on stderr."""

        def print_exception(context: Any, kind: Any, value: Any, tb: Any) -> None:
            if isinstance(value, OSError) and value.errno in (errno.EMFILE, errno.ENFILE):
                # gevent's accept loop hit the open-file limit: it pauses accepting (up to 1 s, then
                # tries again) and the sockets held are served on; no failure to trace.
                limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
                log.warning(
                    "accept paused: open-file limit reached; new connections wait in the listen queue",
                    extra={"fields": {"error": errno.errorcode.get(value.errno or 0, ""), "open_file_limit": limit}},
                )
                return
            log.error("greenlet failed", exc_info=(kind, value, tb), extra={"fields": {"context": repr(context)[:200]}})

        gevent.get_hub().print_exception = print_exception

    def run_every(self, seconds: float, task: Callable[[], None]) -> None:
        """Run task now and then every seconds, in a greenlet of this worker, for as long as it lives."""

        def forever() -> None:
            while True:
                task()
                gevent.sleep(seconds)

        gevent.spawn(forever)

    def watch_loop(self, interval: float, observe: Callable[[float], None]) -> None:
        """Time a timer due every interval, in a greenlet of this worker, and hand observe how late it ran."""
        loop = gevent.get_hub().loop

        def probe() -> None:
            while True:
                # libev starts a timer from the time it read when this turn began: read it anew, so
                # that a long turn before the sleep does not make the timer fire early and hide lag.
                loop.update_now()
                due = time.monotonic() + interval
                gevent.sleep(interval)
                observe(max(0.0, time.monotonic() - due))

        gevent.spawn(probe)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Serve one connection with bounded reads and its listener's body limit."""
        local = listener.getsockname()
        on_server_api = isinstance(local, tuple) and local[1] == self.server_api_port
        limit = self.server_api_body_limit if on_server_api else self.body_limit
        super().handle(listener, TimedReads(client, self.read_timeout, self.body_timeout, limit), addr)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> None:
        """Serve one request on the bare socket: an upgraded WebSocket keeps its own timeouts."""
        sock.take_turns()  # pipelined requests arrive without a read that waits
        sock.reading_body()
        # gunicorn answers `Expect: 100-continue` as soon as it builds the environ; VORA answers it only
        # when it is about to read the body (vora.http.bodies), never before a 401 or a 413.
        expects_continue = req.version >= (1, 1) and any(
            name == "EXPECT" and value.lower() == "100-continue" for name, value in req.headers
        )
        req.headers = [(name, value) for name, value in req.headers if name != "EXPECT"]
        try:
            served = ServedRequest(req, sock.socket, expects_continue, lambda: self._keep(sock))
            with serving(served):
                super().handle_request(listener_name, req, sock.socket, addr)
        except AnswerNotTaken as exc:
            peer = addr[0] if isinstance(addr, tuple) and addr else ""
            log.warning("answer not taken", extra={"fields": {"reason": str(exc), "peer": peer}})
            raise StopIteration from None  # gunicorn closes the connection; what was pipelined behind is dropped
        finally:
            sock.between_requests()

    @staticmethod
    def _keep(sock: TimedReads) -> _KeptConnection | None:
        if isinstance(sock.socket, (ssl.SSLSocket, gevent.ssl.SSLSocket)):
            return None  # gevent closes a TLS connection itself when its handler returns
        sock.keep()
        return _KeptConnection(sock.socket)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer an error met outside the app in the VORA error shape, and log it without a traceback."""
        refusal = refusal_of(exc)
        if refusal is None:
            log.error("error outside the app", exc_info=exc)
            status, message = 500, "An unexpected error occurred; it has been logged"
        else:
            status, message = refusal
            peer = addr[0] if isinstance(addr, tuple) and addr else ""
            log.warning("request refused", extra={"fields": {"status": status, "reason": message, "peer": peer}})
        try:
            util.write_nonblock(client, error_response_bytes(status, message))
        except OSError:
            log.debug("could not write the refusal: the client has gone")
