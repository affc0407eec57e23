"""The gunicorn worker VORA runs: gevent, with bounded request reads and gunicorn's refusals in VORA's shape."""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import gevent
from gunicorn import util
from gunicorn.http.errors import (
    ConfigurationProblem,
    ForbiddenProxyRequest,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
    UnsupportedTransferCoding,
)
from gunicorn.workers.ggevent import GeventWorker

from vora.core.error_shape import RequestReadTimeout, clip, error_body
from vora.core.settings import Settings
from vora.http.bodies import serving

log = logging.getLogger("vora.http")

# What gunicorn's own refusals answer; any other parse error is a 400.
REFUSALS: tuple[tuple[type[Exception], int, str], ...] = (
    (RequestReadTimeout, 408, ""),
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
    """Wrap a client socket so that reads give up: a request's head within the timeout, its body at a pause as long."""

    # The wait for the next request on a kept-alive connection has no bound here (gunicorn's keepalive
    # is that bound); the clock of a head starts at its first byte, or on accept for the first request.

    def __init__(self, sock: Any, timeout: float) -> None:
        self.socket = sock
        self._timeout = timeout
        self._idle = False
        self._head_deadline: float | None = time.monotonic() + timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(self.socket, name)

    def recv(self, size: int) -> bytes:
        """Read from the client, raising RequestReadTimeout when it keeps the server waiting too long."""
        if self._idle:
            data: bytes = self.socket.recv(size)
            if data:
                self._idle = False
                self._head_deadline = time.monotonic() + self._timeout
            return data
        wait = self._timeout if self._head_deadline is None else self._head_deadline - time.monotonic()
        if wait <= 0:
            raise RequestReadTimeout(self._timeout)
        with gevent.Timeout(wait, RequestReadTimeout(self._timeout)):
            received: bytes = self.socket.recv(size)
            return received

    def reading_body(self) -> None:
        """Switch from the head's deadline to a bound on each pause in the body."""
        self._head_deadline = None

    def between_requests(self) -> None:
        """Wait for the next request without a bound of its own."""
        self._idle = True


class VoraWorker(GeventWorker):  # type: ignore[misc] # gunicorn is untyped
    """Gevent worker that bounds request reads (VORA_HTTP_READ_TIMEOUT) and answers refusals as JSON."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = Settings.from_env().http_read_timeout

    def drain_on_sigterm(self, drain: Callable[[], None]) -> None:
        """Make SIGTERM start draining the app before gunicorn's own graceful exit."""
        previous = signal.getsignal(signal.SIGTERM)

        def drain_then_exit(signum: int, frame: Any) -> None:
            # A signal handler runs in gevent's loop callback: blocking there is forbidden.
            gevent.spawn(drain)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, drain_then_exit)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Serve one connection with bounded reads."""
        super().handle(listener, TimedReads(client, self.read_timeout), addr)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> None:
        """Serve one request on the bare socket: an upgraded WebSocket keeps its own timeouts."""
        sock.reading_body()
        try:
            with serving(req):
                super().handle_request(listener_name, req, sock.socket, addr)
        finally:
            sock.between_requests()

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
