"""A VORA server for socket tests, its environment, tokens from a real setup, a publisher and socket clients."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
import requests

from testbed.vora_server import RunningServer
from tests.harness.raw_http import reset_after_head, upgrade_request
from tests.harness.server_env import server_env
from tests.harness.tokens import TokenFactory
from tests.harness.ws_client import (
    Client,
    EventClient,
    handshake_headers,
    make_publisher,
    open_client,
    open_event_stream,
)
from vora.events.publisher import EventPublisher
from vora.store import keys

IDENTITY = "910111000"


ServerFactory = Callable[..., contextlib.AbstractContextManager[RunningServer]]


@pytest.fixture(scope="module")
def ws_env(redis_proc: Any, key_dir: Path, dev_key_pem: bytes, jwks_path: Path) -> dict[str, str]:
    """Return the VORA_* variables of a WebSocket test server."""
    return server_env(
        redis_proc,
        key_dir,
        jwks_path,
        VORA_WS_HEARTBEAT_INTERVAL="5",
        VORA_GRACEFUL_TIMEOUT="10",
    )


@pytest.fixture
def publisher(redisdb: redis.Redis, redis_proc: Any) -> EventPublisher:
    """Publish events the way the telephony side does."""
    return make_publisher(redis.Redis(host=redis_proc.host, port=redis_proc.port))


@pytest.fixture
def setup_answer(redisdb: redis.Redis, make_token: TokenFactory) -> Callable[..., dict[str, str]]:
    """Provision a user, open a session through the REST API and return setup's answer (webSocketToken, lastEventId)."""

    def setup(
        server: RunningServer, subject: str = "alice", identity: str = IDENTITY, scopes: tuple[str, ...] | None = None
    ) -> dict[str, str]:
        redisdb.sadd(keys.user_identities(subject), identity)
        token = make_token(subject) if scopes is None else make_token(subject, scopes)
        response = requests.post(
            f"{server.base_url}/identity/setup",
            json={"connectionType": "WebSocket", "identity": identity},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert response.status_code == 200, response.text
        answer: dict[str, str] = response.json()
        return answer

    return setup


@pytest.fixture
def setup_token(setup_answer: Callable[..., dict[str, str]]) -> Callable[..., str]:
    """Provision a user, open a session through the REST API and return its WebSocket token."""

    def setup(
        server: RunningServer, subject: str = "alice", identity: str = IDENTITY, scopes: tuple[str, ...] | None = None
    ) -> str:
        return setup_answer(server, subject, identity, scopes)["webSocketToken"]

    return setup


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """Open real WebSocket clients and close them after the test."""
    opened: list[Client] = []

    def open_socket(
        server: RunningServer, token: str | None, last_event_id: str | None = None, bearer: bool = False
    ) -> Client:
        client = open_client(server.ws_url, token, last_event_id, bearer)
        opened.append(client)
        return client

    yield open_socket
    for client in opened:
        client.close()


TRANSPORTS = ("websocket", "event-stream")


def open_channel(
    transport: str, server: RunningServer, token: str | None, last_event_id: str | None = None, bearer: bool = False
) -> EventClient:
    """Open a real client of the event channel over one of TRANSPORTS."""
    if transport == "websocket":
        return open_client(server.ws_url, token, last_event_id, bearer)
    return open_event_stream(server.base_url, token, last_event_id, bearer)


def drop_before_opened(transport: str, server: RunningServer, token: str) -> None:
    """Open a session's connection over one of TRANSPORTS and reset it once its head is read, channelOpened unread."""
    head = [("Host", f"127.0.0.1:{server.port}")]
    if transport == "websocket":
        request = upgrade_request(f"/vora/ws?{urlencode({'token': token})}", head + list(handshake_headers().items()))
        expected = 101
    else:
        request = upgrade_request(f"/vora/sse?{urlencode({'token': token})}", [*head, ("Accept", "text/event-stream")])
        expected = 200
    assert reset_after_head(server.port, request) == expected


@pytest.fixture(params=TRANSPORTS)
def connect_either(request: pytest.FixtureRequest) -> Iterator[Callable[..., EventClient]]:
    """Open real clients over the WebSocket, then (a second run of the test) the Server-Sent Events stream."""
    opened: list[EventClient] = []

    def open_either(
        server: RunningServer, token: str | None, last_event_id: str | None = None, bearer: bool = False
    ) -> EventClient:
        client = open_channel(request.param, server, token, last_event_id, bearer)
        opened.append(client)
        return client

    yield open_either
    for client in opened:
        client.close()
