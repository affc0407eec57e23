"""Read each request body in full before the app runs: at most VORA_MAX_BODY_BYTES, chunked or not."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any

from vora.core.error_shape import RequestReadTimeout, body_too_large_message, clip, error_body
from vora.core.types import WsgiApp

# The request gunicorn serves in this greenlet (vora.http.worker sets it; none under a test client), so that
# a refusal can end the connection instead of leaving the server to read, or wait for, the rest of the body.
_serving: ContextVar[Any] = ContextVar("vora_serving", default=None)
READ_SIZE = 16 * 1024


@contextlib.contextmanager
def serving(server_request: Any) -> Iterator[None]:
    """Let refusals during this block close the connection of the server's request object."""
    token = _serving.set(server_request)
    try:
        yield
    finally:
        _serving.reset(token)


def refuse(start_response: Callable[..., Any], status: int, message: str) -> list[bytes]:
    """Answer a request whose body was not read in full with an error, and close its connection after it."""
    server_request = _serving.get()
    if server_request is not None:
        server_request.must_close = True  # gunicorn then answers `Connection: close` and reads no further
    payload = json.dumps(error_body(status, message)).encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


def read_at_most(stream: Any, limit: int) -> bytes:
    """Read a stream until it ends or holds more than limit bytes, whichever comes first."""
    buffer = io.BytesIO()
    while buffer.tell() <= limit:
        chunk = stream.read(min(READ_SIZE, limit + 1 - buffer.tell()))
        if not chunk:
            break
        buffer.write(chunk)
    return buffer.getvalue()


class BodyLimitMiddleware:
    """Hand the app a body read in full, or answer 413, 408 or 400 without calling it."""

    def __init__(self, app: WsgiApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Read the body, then serve the request with it, or refuse it."""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        declared = environ.get("CONTENT_LENGTH") or ""
        if not chunked and not declared:
            return self.app(environ, start_response)  # no body: GET, WebSocket upgrades
        if declared.isdigit() and int(declared) > self.max_bytes:
            return refuse(start_response, 413, body_too_large_message(self.max_bytes))
        expected = self.max_bytes if chunked or not declared.isdigit() else int(declared)
        try:
            body = read_at_most(environ["wsgi.input"], expected)
        except RequestReadTimeout as exc:
            return refuse(start_response, 408, str(exc))
        except (OSError, ValueError) as exc:
            # A malformed chunk, or the client went away mid-body: nothing of it reaches the app.
            return refuse(start_response, 400, f"The request body could not be read: {clip(str(exc))}")
        if len(body) > self.max_bytes:
            return refuse(start_response, 413, body_too_large_message(self.max_bytes))
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)
