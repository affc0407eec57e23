"""What a log line says of an exception, for every layer down to the store."""

from __future__ import annotations

from vora.core.error_shape import clip

DETAIL_LIMIT = 200  # characters of an exception's message a log line keeps


def error_fields(exc: BaseException) -> dict[str, str]:
    """Name an exception for a log line: its type under "error", its message on one shortened line under "detail"."""
    # The type alone cannot tell a connection refused for the worker's open-file limit ("Error 24 ...
    # Too many open files.") from one refused by Redis or from a pool with no connection left.
    return {"error": type(exc).__name__, "detail": clip(" ".join(str(exc).split()), DETAIL_LIMIT)}
