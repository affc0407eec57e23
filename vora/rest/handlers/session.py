"""Handlers of the Session tag."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Response

from vora.auth.tokens import Principal
from vora.http.errors import empty_response
from vora.push.rules import registration_of
from vora.sessions.service import SessionService

Body = dict[str, Any]

# The WebSocket token is a credential: no cache on the way may keep the answer that carries it.
NO_STORE = {"Cache-Control": "no-store"}


class SessionHandlers:
    """The Session tag's operations, on the session rules; each method is named by its operationId."""

    def __init__(self, sessions: SessionService, allowed_methods: Mapping[str, tuple[str, ...]]) -> None:
        self._sessions = sessions
        self._allowed_methods = allowed_methods

    def identities(self, token_info: dict[str, Any]) -> tuple[Body, int]:
        """List the caller's identities."""
        principal: Principal = token_info["principal"]
        return {"identities": self._sessions.identities(principal.subject)}, 200

    def identitiesOptions(self) -> tuple[Body, int, dict[str, str]]:  # noqa: N802 - named by the spec's operationId
        """Answer OPTIONS /identity with its allowed methods and no identities."""
        allow = self._allowed_methods["/identity"]
        return {"identities": []}, 200, {"Allow": ", ".join(allow)}

    def setup(self, body: Body, token_info: dict[str, Any]) -> tuple[Body, int, dict[str, str]]:
        """Open a session on one of the caller's identities; answer its WebSocket token and first socket's start."""
        principal: Principal = token_info["principal"]
        hold_up_mode = bool(body.get("holdUpMode", False))
        opened = self._sessions.open(
            principal.subject,
            body["identity"],
            body["connectionType"],
            hold_up_mode,
            principal.scopes,
            registration_of(hold_up_mode, body.get("push")),
        )
        return {"webSocketToken": opened.websocket_token, "lastEventId": opened.start_id}, 200, NO_STORE

    def events(self, identity: str, body: Body, token_info: dict[str, Any]) -> Response:
        """Set which events the caller's sessions on an identity receive."""
        principal: Principal = token_info["principal"]
        self._sessions.subscribe(principal.subject, identity, bool(body["subscribeAll"]), body.get("events"))
        return empty_response(200)

    def logout(self, identity: str, token_info: dict[str, Any]) -> Response:
        """End the caller's sessions on an identity and close their sockets everywhere."""
        principal: Principal = token_info["principal"]
        self._sessions.logout(principal.subject, identity)
        return empty_response(200)
