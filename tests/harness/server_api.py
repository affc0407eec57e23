"""Call the server API as the telephony side does: publish events and end sessions over real HTTP."""

from __future__ import annotations

from typing import Any

import requests


def publish_event(server_api_url: str, key: str, identity: str, event_type: str, data: dict[str, Any]) -> str:
    """Publish one event for an identity and return its eventId."""
    response = requests.post(
        f"{server_api_url}/identities/{identity}/events",
        json={"type": event_type, "data": data},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    if response.status_code not in {200, 201}:
        raise AssertionError(f"publish answered {response.status_code}: {response.text}")
    event_id: str = response.json()["eventId"]
    return event_id


def publish_batch(server_api_url: str, key: str, events: list[dict[str, Any]]) -> list[str]:
    """Publish a batch of events ({identity, type, data}) and return their eventIds in order."""
    response = requests.post(
        f"{server_api_url}/events/batch",
        json={"events": events},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    if response.status_code not in {200, 201, 207}:
        raise AssertionError(f"batch publish answered {response.status_code}: {response.text[:300]}")
    return [str(item["eventId"]) for item in response.json()["results"]]


def end_sessions(server_api_url: str, key: str, identity: str, reason: str) -> None:
    """End every session of the identity with a reason (disconnected or revoked)."""
    response = requests.delete(
        f"{server_api_url}/identities/{identity}/sessions",
        params={"reason": reason},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    if response.status_code not in {200, 204}:
        raise AssertionError(f"ending sessions answered {response.status_code}: {response.text}")


def list_sessions(server_api_url: str, key: str, identity: str) -> list[dict[str, Any]]:
    """Return the identity's live sessions as the server API lists them (connectionType, sockets...)."""
    response = requests.get(
        f"{server_api_url}/identities/{identity}/sessions", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    if response.status_code != 200:
        raise AssertionError(f"listing sessions answered {response.status_code}: {response.text}")
    sessions: list[dict[str, Any]] = response.json()["sessions"]
    return sessions
