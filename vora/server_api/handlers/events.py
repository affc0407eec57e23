"""Handlers of the server API's Events tag."""

from __future__ import annotations

from typing import Any

from vora.server_api.app import server_api

Body = dict[str, Any]


def publishEvent(identity: str, body: Body) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
    """Publish one event to an identity and answer its eventId and sequenceNumber."""
    appended = server_api().publish(identity, body)
    return {
        "eventId": appended.event_id,
        "sequenceNumber": appended.sequence_number,
        "duplicate": appended.duplicate,
    }, 200


def publishBatch(body: Body) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
    """Publish a batch of events and answer each item at its index."""
    outcomes = server_api().publish_batch(body["events"])
    results = [outcome.as_json() for outcome in outcomes]
    statuses = [result["status"] for result in results]
    return {
        "published": statuses.count("published"),
        "duplicates": statuses.count("duplicate"),
        "refused": statuses.count("refused"),
        "results": results,
    }, 200


def eventHistory(identity: str, limit: int, after: str | None = None) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
    """Answer one page of an identity's retained events after an eventId."""
    events, next_after = server_api().history(identity, after, limit)
    return {"identity": identity, "events": events, "nextAfter": next_after}, 200
