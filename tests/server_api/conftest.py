"""Fixtures for the server API: a real server with server API keys, an HTTP client holding one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests

from tests.harness.vora_server import RunningServer, running_server
from tests.ws.conftest import connect, connect_either, setup_token, ws_env

__all__ = ["connect", "connect_either", "setup_token", "ws_env"]

SERVER_KEY = "srv-test-key-0123456789abcdefghijklmnopqrstuvwxyz"
ROTATED_KEY = "srv-rotated-key-9876543210zyxwvutsrqponmlkjihgfedcba"
IDENTITY = "910111000"


@pytest.fixture(scope="module")
def api_env(ws_env: dict[str, str]) -> dict[str, str]:
    """Return the VORA_* variables of a server with two server API keys (the current one and the next)."""
    return {**ws_env, "VORA_SERVER_API_KEYS": f"{SERVER_KEY},{ROTATED_KEY}", "VORA_SERVER_API_MAX_BATCH": "100"}


@pytest.fixture(scope="module")
def server(api_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Serve VORA and its server API with one gevent worker for the whole module."""
    with running_server(api_env, tmp_path_factory.mktemp("server-api")) as running:
        yield running


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

    def publish(self, identity: str, event: dict[str, Any]) -> requests.Response:
        """Publish one event to an identity."""
        return self.request("POST", f"/identities/{identity}/events", json=event)

    def batch(self, events: list[Any]) -> requests.Response:
        """Publish a batch of events."""
        return self.request("POST", "/events/batch", json={"events": events})


@pytest.fixture
def api(server: RunningServer, redisdb: redis.Redis) -> Iterator[ServerApiClient]:
    """Return a server API client with a valid key, against a Redis flushed after the test."""
    client = ServerApiClient(server)
    yield client
    client.session.close()


def stream_length(redisdb: redis.Redis, identity: str = IDENTITY) -> int:
    """Count the events retained for an identity."""
    from vora.store import keys

    return int(redisdb.xlen(keys.event_stream(identity)))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any


def assert_error_shape(response: requests.Response, status: int) -> dict[str, Any]:
    """Check a response is an error of this status in VORA's error shape and return its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"timestamp", "status", "error", "message"}, body
    assert body["status"] == str(status)
    return body
