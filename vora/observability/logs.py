"""Write one JSON log line per event, and one per HTTP request with its request id."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from flask import has_request_context, request
from gunicorn.glogging import Logger as GunicornLogger

from vora.core.clock import utc_timestamp
from vora.core.types import WsgiApp
from vora.observability.metrics import observe_request

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_log = logging.getLogger("vora.access")
STREAMING_OPERATIONS = frozenset({"websocket", "eventStream"})

# Whatever a library logs, a credential never reaches the output: query tokens,
# bearer values and anything shaped like a JWT or a VORA WebSocket token.
_SECRETS = [
    (re.compile(r"(?i)([?&](?:token|access_token|lastEventId_token)=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (re.compile(r"v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}"), "[redacted-ws-token]"),
]


# Substrings without which none of the patterns can match: most lines skip the regexes.
_SECRET_MARKERS = ("oken=", "earer", "EARER", "eyJ", "v1.")


def redact(text: str) -> str:
    """Mask every credential-shaped value in a log line."""
    if not any(marker in text for marker in _SECRET_MARKERS):
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object with its structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a JSON line."""
        line: dict[str, Any] = {
            "ts": utc_timestamp(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if "request_id" not in line and has_request_context():
            line["request_id"] = request.environ.get("vora.request_id")
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str))


class TextFormatter(logging.Formatter):
    """Format a record as one readable line for a developer's terminal (`make run`): time, level, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a text line; an access record as `METHOD path status latency`."""
        fields: dict[str, Any] = dict(getattr(record, "fields", {}))
        clock = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        if record.name == "vora.access":
            method, path = fields.pop("method", ""), fields.pop("path", "")
            status, latency = fields.pop("status", None), fields.pop("latency_ms", None)
            message = f"{method} {path} {status if status is not None else '-'} {latency} ms"
        else:
            message = record.getMessage()
        if "request_id" not in fields and has_request_context():
            fields["request_id"] = request.environ.get("vora.request_id")
        extras = " ".join(f"{name}={value}" for name, value in fields.items() if value is not None)
        line = f"{clock} {record.levelname:<7} {record.name}: {message}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "text": TextFormatter}


class AccessLineWriter:
    """Write access lines straight to VORA's own log handler while it is the only one, else through logging.

    A LogRecord, its formatter and the handler chain cost about a tenth of a GET /identity
    (docs/BENCHMARKS.md); the line written here is the one JsonFormatter would render from it.
    """

    def __init__(self, handler: logging.StreamHandler[Any] | None = None) -> None:
        self._handler = handler

    def is_direct(self) -> bool:
        """Tell whether a line may skip logging: nothing but VORA's own handler would see its record."""
        handler = self._handler
        root = logging.root
        return (
            handler is not None
            and len(root.handlers) == 1
            and root.handlers[0] is handler
            and not access_log.handlers
            and not access_log.filters
            and not handler.filters
            and access_log.propagate
        )

    def write(self, fields: dict[str, Any]) -> None:
        """Log one request's line with its fields, at INFO."""
        if not access_log.isEnabledFor(logging.INFO):
            return
        if self._handler is None or not self.is_direct():
            access_log.info("request", extra={"fields": fields})
            return
        line = access_line(fields)
        handler = self._handler
        with handler.lock or contextlib.nullcontext():
            handler.stream.write(line + handler.terminator)
            handler.flush()


def access_line(fields: dict[str, Any]) -> str:
    """Render an access record's JSON line as JsonFormatter does, without a LogRecord."""
    head = f'{{"ts": "{utc_timestamp()}", "level": "info", "logger": "vora.access", "msg": "request"'
    # One C-encoded dumps of the fields, its opening brace dropped, continues the line.
    return redact(f"{head}, {json.dumps(fields)[1:]}" if fields else head + "}")


access_writer = AccessLineWriter()


def configure_logging(level: str, log_format: str = "json") -> None:
    """Send every log record to stderr as JSON lines (or readable text lines, for a developer's terminal)."""
    global access_writer  # noqa: PLW0603 - the middleware writes through whatever this configured last
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[log_format]())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Access lines skip logging only where they are JSON: the direct writer renders exactly that.
    access_writer = AccessLineWriter(handler if log_format == "json" else None)
    # Connexion logs each validation failure at ERROR; the access line already tells it.
    logging.getLogger("connexion").setLevel(logging.CRITICAL)


class JsonGunicornLogger(GunicornLogger):  # type: ignore[misc] # gunicorn is untyped
    """Gunicorn's own logger (its master's and workers' lines, a WORKER TIMEOUT included) writing JSON lines."""

    formatter: type[logging.Formatter] = JsonFormatter

    def setup(self, cfg: Any) -> None:
        """Set gunicorn's handlers up as usual, then make each of them format records as VORA's own are."""
        super().setup(cfg)
        for handler in [*self.error_log.handlers, *self.access_log.handlers]:
            handler.setFormatter(self.formatter())


class TextGunicornLogger(JsonGunicornLogger):
    """Gunicorn's own logger writing the readable lines of `make run` (VORA_LOG_FORMAT=text)."""

    formatter = TextFormatter


def log_uncaught(logger: logging.Logger) -> None:
    """Log what no code caught (in a thread, a greenlet) and Python's warnings as JSON lines, not bare tracebacks."""

    def on_exception(kind: type[BaseException], value: BaseException, traceback: Any) -> None:
        logger.error("uncaught exception", exc_info=(kind, value, traceback))

    def on_thread_exception(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            on_exception(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = on_exception
    threading.excepthook = on_thread_exception
    logging.captureWarnings(True)


def request_id_of(environ: dict[str, Any]) -> str:
    """Take the caller's X-Request-ID when it is safe to echo, else make one."""
    offered = environ.get("HTTP_X_REQUEST_ID", "")
    return offered if _SAFE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex


class RequestLogMiddleware:
    """Log each request (never its query string or headers) and echo its request id."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Serve one request and log it."""
        started = time.perf_counter()
        request_id = request_id_of(environ)
        environ["vora.request_id"] = request_id
        seen: dict[str, Any] = {"status": 0}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"] = int(status.split(" ", 1)[0])
            headers = [(k, v) for k, v in headers if k.lower() != "x-request-id"]
            headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        try:
            return self.app(environ, start)
        finally:
            elapsed = time.perf_counter() - started
            operation = environ.get("vora.operation")
            if operation in STREAMING_OPERATIONS and seen["status"] in (0, 101, 200):
                # An accepted socket or stream: its lifetime would swamp the HTTP latencies (they have their own
                # metrics); a refused one is an HTTP request like any other.
                seen["status"] = 101 if operation == "websocket" else 200
            else:
                observe_request(operation, environ.get("REQUEST_METHOD", ""), seen["status"], elapsed)
            # Path only: a WebSocket token may ride in the query string.
            access_writer.write(
                {
                    "request_id": request_id,
                    "method": environ.get("REQUEST_METHOD"),
                    "path": environ.get("PATH_INFO"),
                    "status": seen["status"] or None,
                    "latency_ms": round(elapsed * 1000, 2),
                    "operation": operation,
                }
            )
