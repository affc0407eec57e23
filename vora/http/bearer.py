"""Read an Authorization header: the one rule REST and the WebSocket share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    """Connexion's security handlers, reading the Authorization header with authorization_parts.

    A security function the spec names (x-tokenInfoFunc, x-bearerInfoFunc) is the one the app bound
    to that name, a method of the app's own verifier or key set; Connexion would import a module-level
    function instead, which could reach the app's objects only through global state.
    """

    def __init__(
        self, pass_context_arg_name: str | None, bound: Mapping[str, Callable[..., Any]] | None = None
    ) -> None:
        super().__init__(pass_context_arg_name)
        self._bound = dict(bound or {})

    def _bound_function(self, security_definition: dict[str, Any], key: str) -> Callable[..., Any]:
        """Return the function bound to the name the spec gives under key."""
        name = security_definition[key]
        if name not in self._bound:
            raise ValueError(f"{key} {name!r} is not bound by this app (bound: {', '.join(sorted(self._bound))})")
        return self._bound[name]

    def get_tokeninfo_func(self, security_definition: dict[str, Any]) -> Callable[..., Any] | None:
        """Return the app's bound token verification function (x-tokenInfoFunc), else Connexion's choice."""
        if "x-tokenInfoFunc" not in security_definition:
            return super().get_tokeninfo_func(security_definition)  # type: ignore[no-any-return] # connexion is untyped
        return self._bound_function(security_definition, "x-tokenInfoFunc")

    def get_bearerinfo_func(self, security_definition: dict[str, Any]) -> Callable[..., Any] | None:
        """Return the app's bound bearer verification function (x-bearerInfoFunc), else Connexion's choice."""
        if "x-bearerInfoFunc" not in security_definition:
            return super().get_bearerinfo_func(security_definition)  # type: ignore[no-any-return] # connexion is untyped
        return self._bound_function(security_definition, "x-bearerInfoFunc")

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
