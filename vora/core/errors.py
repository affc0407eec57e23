"""The errors a rule raises on purpose: each carries its HTTP status and a message for humans."""

from __future__ import annotations


class VoraError(Exception):
    """An error a handler raises on purpose, with its status and a message for humans."""

    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(VoraError):
    """The request is well-formed JSON but asks for something VORA does not support."""

    status = 400


class NotFound(VoraError):
    """The caller has no such identity or session."""

    status = 404


class Conflict(VoraError):
    """The request cannot be served in the current state of the resource (a full identity, a reused key)."""

    status = 409


class TooManyRequests(VoraError):
    """The caller did this too often; Retry-After says when it may again."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})


class Forbidden(VoraError):
    """The caller is who it says, but this is not theirs (another user's identity)."""

    status = 403
