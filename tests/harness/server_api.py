"""Call the server API as the telephony side does: publish events and end sessions over real HTTP."""

from __future__ import annotations

from typing import Any

import redis
import requests

from testbed.vora_server import RunningServer
from vora.store import keys


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


SERVER_KEY = "srv-test-key-0123456789abcdefghijklmnopqrstuvwxyz"


ROTATED_KEY = "srv-rotated-key-9876543210zyxwvutsrqponmlkjihgfedcba"


IDENTITY = "910111000"


class ServerApiClient:
    """Call the server API of a running server with a server API key."""

    def __init__(self, server: RunningServer, key: str | None = SERVER_KEY) -> None:
        self.base = server.server_api_url
        self.session = requests.Session()
        if key is not None:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def request(self, method: str, path: str, **options: Any) -> requests.Response:
        """Send one request to a path under the server API's base path."""
        return self.session.request(method, self.base + path, timeout=10, **options)

    def publish(self, identity: str, event: Any) -> requests.Response:
        """Publish one event to an identity (any JSON body, so that refusals can be tested too)."""
        return self.request("POST", f"/identities/{identity}/events", json=event)

    def batch(self, events: list[Any]) -> requests.Response:
        """Publish a batch of events."""
        return self.request("POST", "/events/batch", json={"events": events})


def stream_length(redisdb: redis.Redis, identity: str = IDENTITY) -> int:
    """Count the events retained for an identity."""
    return int(redisdb.xlen(keys.event_stream(identity)))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any


def assert_error_shape(response: requests.Response, status: int) -> dict[str, Any]:
    """Check a response is an error of this status in VORA's error shape and return its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"timestamp", "status", "error", "message"}, body
    assert body["status"] == str(status)
    return body


def list_sessions(server_api_url: str, key: str, identity: str) -> list[dict[str, Any]]:
    """Return the identity's live sessions as the server API lists them (connectionType, sockets...)."""
    response = requests.get(
        f"{server_api_url}/identities/{identity}/sessions", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    if response.status_code != 200:
        raise AssertionError(f"listing sessions answered {response.status_code}: {response.text}")
    sessions: list[dict[str, Any]] = response.json()["sessions"]
    return sessions
