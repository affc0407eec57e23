"""Read an Authorization header: the one rule REST and the WebSocket share."""

from __future__ import annotations

from typing import Any

from connexion.exceptions import OAuthProblem
from connexion.security import FlaskSecurityHandlerFactory


def authorization_parts(header: str | None) -> tuple[str, str] | None:
    """Split an Authorization header into its lower-cased scheme and its credentials.

    Any run of whitespace (a tab included) separates the two, as Connexion splits it;
    None when the header is missing, empty, or has no credentials.
    """
    if not header:
        return None
    parts = header.split(None, 1)
    if len(parts) != 2:
        return None
    scheme, credentials = parts
    credentials = credentials.strip()
    return (scheme.lower(), credentials) if credentials else None


def bearer_token(header: str | None) -> str | None:
    """Return the token of a `Bearer <token>` header, or None."""
    parts = authorization_parts(header)
    return parts[1] if parts is not None and parts[0] == "bearer" else None


class BearerSecurityHandlerFactory(FlaskSecurityHandlerFactory):  # type: ignore[misc] # connexion is untyped
    """Connexion's security handlers, reading the Authorization header with authorization_parts."""

    @staticmethod
    def get_auth_header_value(request: Any) -> tuple[str | None, str | None]:
        """Return the scheme and credentials, (None, None) without a header; raise OAuthProblem on a bad one."""
        header = request.headers.get("Authorization")
        if not header:
            return None, None
        parts = authorization_parts(header)
        if parts is None:
            raise OAuthProblem(description="Invalid authorization header")
        return parts
