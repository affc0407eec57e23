"""The VORA error shape {timestamp, status, error, message}, with nothing heavier than the standard library.

Gunicorn's master imports the worker class before gevent patches anything, so what the worker
needs to answer an error lives here, away from Flask and Connexion.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from vora.clock import utc_timestamp

# How much of a value a client sent an error message repeats: enough to recognise it.
ECHO_LIMIT = 64
# A quoted value (as repr or a validator writes it) or any long unbroken run of characters.
_ECHOED = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+""")


class RequestReadTimeout(Exception):
    """A client took longer than VORA_HTTP_READ_TIMEOUT to send its request's head, or paused its body as long."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"The request did not arrive in time: the server waits {seconds:g} s for it")
        self.seconds = seconds


class RequestBodyTimeout(RequestReadTimeout):
    """A client took longer than VORA_HTTP_BODY_TIMEOUT to send a request's whole body."""

    def __init__(self, seconds: float) -> None:
        message = f"The request body did not arrive in time: the server waits {seconds:g} s for a whole body"
        Exception.__init__(self, message)
        self.seconds = seconds


class RequestBodyTooLarge(Exception):
    """A request's body, as sent (chunked framing included), is over the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(body_too_large_message(limit))
        self.limit = limit


def clip(value: str, limit: int = ECHO_LIMIT) -> str:
    """Shorten a value a client sent to `limit` characters and an ellipsis, for an error message."""
    return value if len(value) <= limit else value[:limit] + "\u2026"


def clip_echoes(message: str, limit: int = ECHO_LIMIT) -> str:
    """Shorten every quoted value and every long unbroken run in a message, keeping the rest."""

    def shorten(found: re.Match[str]) -> str:
        text = found.group(0)
        if len(text) > 1 and text[0] in "'\"":
            return text[0] + clip(text[1:-1], limit) + text[0]
        return clip(text, limit)

    return _ECHOED.sub(shorten, message)


def body_too_large_message(limit: int) -> str:
    """Say that a request body is over the limit."""
    return f"The request body is larger than the {limit} bytes this server accepts"


def error_body(status: int, message: str) -> dict[str, str]:
    """Build the ResponseStatusVoraError body for a status and a message."""
    return {
        "timestamp": utc_timestamp(),
        "status": str(status),
        "error": HTTPStatus(status).phrase,
        "message": message,
    }
