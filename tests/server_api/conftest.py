"""Fixtures for the server API: a real server with server API keys, an HTTP client holding one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from testbed.vora_server import RunningServer, running_server
from tests.harness.server_api import (
    ROTATED_KEY,
    SERVER_KEY,
    ServerApiClient,
)


@pytest.fixture(scope="module")
def api_env(ws_env: dict[str, str]) -> dict[str, str]:
    """Return the VORA_* variables of a server with two server API keys (the current one and the next)."""
    return {**ws_env, "VORA_SERVER_API_KEYS": f"{SERVER_KEY},{ROTATED_KEY}", "VORA_SERVER_API_MAX_BATCH": "100"}


@pytest.fixture(scope="module")
def server(api_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Serve VORA and its server API with one gevent worker for the whole module."""
    with running_server(api_env, tmp_path_factory.mktemp("server-api")) as running:
        yield running


@pytest.fixture
def api(server: RunningServer, redisdb: redis.Redis) -> Iterator[ServerApiClient]:
    """Return a server API client with a valid key, against a Redis flushed after the test."""
    client = ServerApiClient(server)
    yield client
    client.session.close()
