"""Handlers of the server API's Connections tag."""

from __future__ import annotations

from typing import Any

from vora.core.clock import now_ms
from vora.server_api.rules import ServerApi

Body = dict[str, Any]
DEFAULT_REASON = "disconnected"


class ConnectionHandlers:
    """The Connections tag's operations, on the server API's rules; each method is named by its operationId."""

    def __init__(self, rules: ServerApi) -> None:
        self._rules = rules

    def listSessions(self, identity: str) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
        """List an identity's sessions with their sockets open on any instance."""
        return self._rules.session_list(identity, now_ms()), 200

    def online(self, identity: str) -> tuple[Body, int]:
        """Tell whether an identity has a socket open on any instance, and how many."""
        sockets = self._rules.open_sockets(identity, now_ms())
        return {"identity": identity, "online": sockets > 0, "sockets": sockets}, 200

    def disconnectIdentity(self, identity: str, reason: str = DEFAULT_REASON) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
        """End every session of an identity and close its sockets everywhere."""
        return {"identity": identity, "reason": reason, "ended": self._rules.disconnect(identity, reason)}, 200

    def disconnectSession(  # noqa: N802 - named by the spec's operationId
        self,
        identity: str,
        sessionId: str,  # noqa: N803 - named by the spec
        reason: str = DEFAULT_REASON,
    ) -> tuple[Body, int]:
        """End one session of an identity and close its sockets everywhere."""
        ended = self._rules.disconnect(identity, reason, sessionId)
        return {"identity": identity, "reason": reason, "ended": ended}, 200
