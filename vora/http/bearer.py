"""Read an Authorization header: the one rule REST and the WebSocket share.

gunicorn's worker class imports this module in the master, before gevent patches the worker: it
must not load Connexion (whose imports take the unpatched ssl module with them).
"""

from __future__ import annotations


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
