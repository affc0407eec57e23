"""Handlers of the server API's Events tag."""

from __future__ import annotations

from typing import Any

from vora.server_api.rules import ServerApi

Body = dict[str, Any]


class EventHandlers:
    """The Events tag's operations, on the server API's rules; each method is named by its operationId."""

    def __init__(self, rules: ServerApi) -> None:
        self._rules = rules

    def publishEvent(self, identity: str, body: Body) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
        """Publish one event to an identity and answer its eventId and sequenceNumber."""
        appended = self._rules.publish(identity, body)
        return {
            "eventId": appended.event_id,
            "sequenceNumber": appended.sequence_number,
            "duplicate": appended.duplicate,
        }, 200

    def publishBatch(self, body: Body) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
        """Publish a batch of events and answer each item at its index."""
        outcomes = self._rules.publish_batch(body["events"])
        results = [outcome.as_json() for outcome in outcomes]
        statuses = [result["status"] for result in results]
        return {
            "published": statuses.count("published"),
            "duplicates": statuses.count("duplicate"),
            "refused": statuses.count("refused"),
            "results": results,
        }, 200

    def eventHistory(self, identity: str, limit: int, after: str | None = None) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
        """Answer one page of an identity's retained events after an eventId."""
        events, next_after = self._rules.history(identity, after, limit)
        return {"identity": identity, "events": events, "nextAfter": next_after}, 200
