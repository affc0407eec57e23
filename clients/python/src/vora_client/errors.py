"""Errors the client raises: one class per status VORA documents, each carrying the error shape."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class VoraError(Exception):
    """VORA answered an error: status, error, message and timestamp come from its error shape."""

    def __init__(
        self, status: int, error: str, message: str, timestamp: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.timestamp = timestamp
        self.retry_after = retry_after


class BadRequest(VoraError):
    """400: the request breaks the contract; sending it again will not help."""


class Unauthorized(VoraError):
    """401: the access token (or WebSocket token) is missing, invalid or expired."""


class Forbidden(VoraError):
    """403: the token lacks a scope, or the identity is not the user's."""


class NotFound(VoraError):
    """404: no such identity or session for this user."""


class Conflict(VoraError):
    """409: the request conflicts with the session's state."""


class PayloadTooLarge(VoraError):
    """413: the body is over VORA's limit."""


class TooManyRequests(VoraError):
    """429: a rate or a cap was reached; wait retry_after seconds."""


class ServiceUnavailable(VoraError):
    """503: VORA or its store is briefly unavailable; retry after retry_after seconds."""


class AccessTokenRefused(Exception):
    """Raised by the app's access-token provider when no token can be had until the user acts.

    The refresh token was revoked, the user logged out: a stream then closes with reason "unauthorized" and tries
    no more. Anything else the provider raises (its OAuth server out of reach) is taken as passing, and retried.
    """


class AccessTokenProviderFailed(Unauthorized):
    """The app's access-token provider raised, or gave no token within the client's access_token_timeout.

    A REST call raises it (a 401 the SDK made; __cause__ is what the provider raised). A stream retries with a
    refused attempt's backoff and passes it to on_error, unless refused: the provider raised AccessTokenRefused,
    and the stream closes with reason "unauthorized".
    """

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(401, "Unauthorized", message)
        self.refused = refused


class ConnectionFailed(Exception):
    """VORA could not be reached (refused, reset, timed out), or something else answered (a proxy's own error page).

    status and retry_after are set when an HTTP answer came without VORA's error shape.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ProxyAuthenticationRequired(ConnectionFailed):
    """The forward proxy answered 407: it wants credentials (user:password in the proxy URL), or refused them.

    Not VORA's 401: no token is refreshed and no session set up again. A stream takes it as a failed connect
    (backoff, as for a proxy that is down) and passes it to on_error, since only the app can fix its proxy setting.
    """

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, status=407)
        # Proxy-Authenticate names the scheme the proxy wants (Basic is the one the SDK can send).
        self.proxy_authenticate = (headers or {}).get("proxy-authenticate")


class MalformedFrame(ValueError):
    """A frame of the event channel that is no event envelope (not a JSON object with a string type and object data).

    The stream skips it, reports it to on_error and reads on, as the TypeScript SDK's `error` event does.
    """

    def __init__(self, frame: str, why: str) -> None:
        super().__init__(f"not an event envelope ({why}): {frame[:200]!r}")
        self.frame = frame


class StreamClosed(Exception):
    """The event stream closed for good; reason says why (logout, revoked, closed by the app...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the event stream is closed: {reason}")
        self.reason = reason


_BY_STATUS: dict[int, type[VoraError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """Read a Retry-After header given in seconds (VORA never sends a date)."""
    raw = headers.get("retry-after") or headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def error_shape(body: bytes) -> dict[str, Any] | None:
    """Return the body's error shape ({timestamp, status, error, message}) when it is VORA's, else None."""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        return None
    if isinstance(parsed, dict) and {"status", "error", "message"} <= parsed.keys():
        return parsed
    return None


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> VoraError:
    """Build the typed error for an answer, from VORA's error shape when the body holds one."""
    shape: dict[str, Any] = {}
    try:
        parsed = json.loads(body) if body else {}
        if isinstance(parsed, dict):
            shape = parsed
    except ValueError:
        pass
    kind = _BY_STATUS.get(status, VoraError)
    return kind(
        status,
        str(shape.get("error", "")),
        str(shape.get("message", body[:200].decode(errors="replace"))),
        str(shape.get("timestamp", "")),
        retry_after_of(headers),
    )
