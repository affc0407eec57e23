"""Read each request body in full before the app runs, and only when it is wanted: at most VORA_MAX_BODY_BYTES."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from vora.core.error_shape import RequestBodyTooLarge, RequestReadTimeout, body_too_large_message, clip, error_body
from vora.core.types import WsgiApp
from vora.http.bearer import bearer_token

READ_SIZE = 16 * 1024
BODY_GATE = "vora.body_gate"  # the server API app's BodyGate, in its extensions
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# RFC 7515's compact serialization, as every access token VORA verifies is; RFC 6750's token68 for an opaque key.
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


@dataclass
class ServedRequest:
    """The request gunicorn serves in this greenlet: its parsed request, its bare socket, a 100 it may owe."""

    request: Any
    client: Any
    owes_continue: bool = False
    # Set by the worker: keeps the connection open past the answer and returns what closes it.
    keeper: Callable[[], Callable[[], None] | None] | None = None

    def close_after(self) -> None:
        """Close the connection after the answer: the rest of the body stays unread."""
        self.request.must_close = True  # gunicorn then answers `Connection: close` and reads no further

    def continue_body(self) -> None:
        """Tell a client waiting on `Expect: 100-continue` to send its body, once."""
        if self.owes_continue:
            self.owes_continue = False
            self.client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")


# Set by vora.http.worker; None under a test client, where there is no connection to close or to continue.
_serving: ContextVar[ServedRequest | None] = ContextVar("vora_serving", default=None)


@contextlib.contextmanager
def serving(served: ServedRequest) -> Iterator[None]:
    """Let the body middleware close or continue the connection of the request served in this block."""
    token = _serving.set(served)
    try:
        yield
    finally:
        _serving.reset(token)


def close_after() -> None:
    """Close the served connection after its answer, when there is one."""
    served = _serving.get()
    if served is not None:
        served.close_after()


def continue_body() -> None:
    """Send the served connection the 100 Continue it may be owed."""
    served = _serving.get()
    if served is not None:
        served.continue_body()


def keep_connection() -> Callable[[], None] | None:
    """Keep the served connection open after the request ends; return what closes it, or None if it cannot be kept."""
    served = _serving.get()
    if served is None or served.keeper is None:
        return None
    return served.keeper()


def path_pattern(base_path: str, spec_path: str) -> re.Pattern[str]:
    """Match the request paths of a spec path like /logout/{identity}."""
    parts = re.split(r"\{\w+\}", spec_path)
    return re.compile(re.escape(base_path) + "[^/]+".join(re.escape(part) for part in parts))


@dataclass(frozen=True)
class BodyGate:
    """Which request bodies are worth reading: for an operation that takes one, with credentials of its form."""

    operations: tuple[tuple[str, re.Pattern[str], re.Pattern[str] | None], ...]  # method, path, credentials' form

    @classmethod
    def from_spec(cls, spec: dict[str, Any], base_path: str) -> BodyGate:
        """Gate the operations of an OpenAPI document that declare a requestBody, by their security scheme."""
        schemes = spec.get("components", {}).get("securitySchemes", {})
        operations = []
        for path, item in spec.get("paths", {}).items():
            for method, operation in item.items():
                if method not in HTTP_METHODS or "requestBody" not in operation:
                    continue
                required = [name for need in operation.get("security", spec.get("security", [])) for name in need]
                forms = {COMPACT_JWS if schemes[name]["type"] == "oauth2" else TOKEN68 for name in required}
                # One scheme of a kind is what VORA's specs declare; any other mix is not pre-checked.
                form = forms.pop() if len(forms) == 1 else None
                operations.append((method.upper(), path_pattern(base_path, path), form))
        return cls(tuple(operations))

    def unwanted(self, environ: dict[str, Any]) -> bool:
        """Tell whether the app will refuse or ignore this request's body whatever it holds."""
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        for wanted_method, pattern, form in self.operations:
            if method == wanted_method and pattern.fullmatch(path):
                if form is None:
                    return False
                token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
                return token is None or form.fullmatch(token) is None  # the app answers 401 without it
        return True  # no operation here takes a body: 404, 405, or one that ignores it


def refuse(
    start_response: Callable[..., Any], status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> list[bytes]:
    """Answer a request whose body was not read in full with an error, and close its connection after it."""
    close_after()
    payload = json.dumps(error_body(status, message)).encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *headers],
    )
    return [payload]


def unsupported_coding(environ: dict[str, Any]) -> str | None:
    """Return the Content-Encoding a body was sent in when it is not the identity (none), which is all VORA reads."""
    coding = environ.get("HTTP_CONTENT_ENCODING", "").strip()
    return coding if coding and coding.lower() != "identity" else None


def unsupported_transfer_coding(environ: dict[str, Any]) -> str | None:
    """Return the Transfer-Encoding a body was sent in when it holds a coding other than chunked."""
    header = environ.get("HTTP_TRANSFER_ENCODING", "")
    codings = [coding.strip().lower() for coding in header.split(",")]
    return header.strip() if any(coding not in ("", "chunked", "identity") for coding in codings) else None


def read_at_most(stream: Any, limit: int) -> bytes:
    """Read a stream until it ends or holds more than limit bytes, whichever comes first."""
    buffer = io.BytesIO()
    while buffer.tell() <= limit:
        chunk = stream.read(min(READ_SIZE, limit + 1 - buffer.tell()))
        if not chunk:
            break
        buffer.write(chunk)
    return buffer.getvalue()


def without_body(environ: dict[str, Any]) -> None:
    """Hand the app an empty body in place of one left unread, and close the connection after the answer."""
    close_after()
    environ["wsgi.input"] = io.BytesIO()
    environ["CONTENT_LENGTH"] = "0"
    environ.pop("HTTP_TRANSFER_ENCODING", None)


class BodyLimitMiddleware:
    """Hand the app a body read in full, none when it is unwanted, or answer 415, 501, 413, 408 or 400 without it."""

    def __init__(self, app: WsgiApp, max_bytes: int, gate: BodyGate | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.gate = gate

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Read the body, then serve the request with it, or refuse it."""
        transfer_coding = environ.get("HTTP_TRANSFER_ENCODING", "")
        chunked = "chunked" in transfer_coding.lower()
        declared = environ.get("CONTENT_LENGTH") or ""
        if not transfer_coding and declared in ("", "0"):
            return self.app(environ, start_response)  # no body: GET, WebSocket upgrades
        if self.gate is not None and self.gate.unwanted(environ):
            # Refused anyway (401, 404, 405) or ignored: reading it would only let a client hold the worker.
            without_body(environ)
            return self.app(environ, start_response)
        coding = unsupported_coding(environ)
        if coding is not None:
            # Read as it is, a gzip body would be "not valid JSON": say what is wrong (RFC 9110 15.5.16).
            message = f"The request body is sent with Content-Encoding {clip(coding)!r}; send it unencoded (identity)"
            return refuse(start_response, 415, message, (("Accept-Encoding", "identity"),))
        coding = unsupported_transfer_coding(environ)
        if coding is not None:
            # gunicorn undoes the chunking only and hands a gzip or deflate body on as it came (RFC 9112 6.1: 501).
            message = f"The request body is sent with Transfer-Encoding {clip(coding)!r}; send it plain or chunked"
            return refuse(start_response, 501, message)
        if declared.isdigit() and int(declared) > self.max_bytes:
            return refuse(start_response, 413, body_too_large_message(self.max_bytes))
        expected = self.max_bytes if chunked or not declared.isdigit() else int(declared)
        try:
            continue_body()
            body = read_at_most(environ["wsgi.input"], expected)
        except RequestReadTimeout as exc:
            return refuse(start_response, 408, str(exc))
        except RequestBodyTooLarge:
            return refuse(start_response, 413, body_too_large_message(self.max_bytes))
        except (OSError, ValueError) as exc:
            # A malformed chunk, or the client went away mid-body: nothing of it reaches the app.
            return refuse(start_response, 400, f"The request body could not be read: {clip(str(exc))}")
        if len(body) > self.max_bytes:
            return refuse(start_response, 413, body_too_large_message(self.max_bytes))
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)
