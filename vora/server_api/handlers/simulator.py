"""Handlers of spec/vora-console.yaml: the console's telephony simulator, on the server API's rules."""

from __future__ import annotations

from typing import Any

from vora.auth.tokens import Principal
from vora.core.clock import now_ms
from vora.core.errors import Forbidden
from vora.events.templates import data_templates
from vora.server_api.rules import ServerApi
from vora.sessions.ownership import Ownership

Body = dict[str, Any]


class SimulatorHandlers:
    """The Simulator tag's operations: the server API's publish and session list, for the caller's own identities."""

    def __init__(self, rules: ServerApi, ownership: Ownership) -> None:
        self._rules = rules
        self._ownership = ownership

    def _own(self, token_info: dict[str, Any], identity: str) -> None:
        """Refuse (403) an identity the directory does not give the caller."""
        principal: Principal = token_info["principal"]
        if identity not in self._ownership.identities_of(principal.subject):
            raise Forbidden(f"Identity {identity} is not one of yours: the simulator acts on your own identities only")

    def simulatorTemplates(self) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
        """List a ready-to-send data template of each publishable event type."""
        return {"templates": data_templates()}, 200

    def simulatorStatus(self, identity: str, token_info: dict[str, Any]) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
        """Show one of the caller's identities' sessions and whether it is online, as listSessions does."""
        self._own(token_info, identity)
        return self._rules.session_list(identity, now_ms()), 200

    def simulatorPublish(self, identity: str, body: Body, token_info: dict[str, Any]) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
        """Publish one event to one of the caller's identities, as publishEvent does without an idempotency key."""
        self._own(token_info, identity)
        appended = self._rules.publish(identity, {"type": body["type"], "data": body["data"]})
        return {"eventId": appended.event_id, "sequenceNumber": appended.sequence_number, "type": body["type"]}, 202
