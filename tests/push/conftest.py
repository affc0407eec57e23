"""Fixtures for the push wake-up journeys: a real gateway and callback receiver, real servers, real sockets."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from testbed.vora_server import RunningServer, running_server
from testbed.webhooks import WebhookReceiver
from tests.harness.push import HOLDUP_TIMEOUT, OpenedSession
from tests.harness.tokens import TokenFactory
from vora.sessions.service import hash_token
from vora.store import keys

GATEWAY_SECRET = "gateway-secret-" + "g" * 24
CALLBACK_SECRET = "callback-secret-" + "c" * 24
DEVICE = {"platform": "apns", "deviceToken": "f" * 64, "appId": "com.example.vora"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[WebhookReceiver]:
    """Run the push gateway the servers post to."""
    with WebhookReceiver(GATEWAY_SECRET) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def callback() -> Iterator[WebhookReceiver]:
    """Run the telephony side's readiness callback."""
    with WebhookReceiver(CALLBACK_SECRET) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def push_env(
    ws_env: dict[str, str],
    gateway: WebhookReceiver,
    callback: WebhookReceiver,
) -> dict[str, str]:
    """Return the VORA_* variables of a server with pushes on: short timeouts, quick retries."""
    return {
        **ws_env,
        "VORA_PUSH_GATEWAY_URL": gateway.url,
        "VORA_PUSH_SECRET": GATEWAY_SECRET,
        "VORA_HOLDUP_CALLBACK_URL": callback.url,
        "VORA_HOLDUP_CALLBACK_SECRET": CALLBACK_SECRET,
        "VORA_PUSH_TIMEOUT": "1",
        "VORA_PUSH_MAX_ATTEMPTS": "3",
        "VORA_PUSH_BACKOFF": "0.05",
        "VORA_PUSH_RATE_LIMIT": "3",
        "VORA_HOLDUP_TIMEOUT": str(HOLDUP_TIMEOUT),
    }


@pytest.fixture(scope="module")
def push_server(push_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Serve VORA with pushes on, for the whole module."""
    with running_server(push_env, tmp_path_factory.mktemp("push-server")) as running:
        yield running


@pytest.fixture
def make_push_server(push_env: dict[str, str], tmp_path: Path) -> Callable[..., Any]:
    """Start another server with pushes on and some settings changed."""

    def start(**overrides: str) -> contextlib.AbstractContextManager[RunningServer]:
        env = {**push_env, **{f"VORA_{k.upper()}": v for k, v in overrides.items()}}
        return running_server(env, tmp_path)

    return start


@pytest.fixture
def open_session(redisdb: redis.Redis, make_token: TokenFactory) -> Callable[..., OpenedSession]:
    """Provision an identity for alice and open a session on it through the REST API."""

    def open_one(
        server: RunningServer, identity: str, hold_up: bool = True, device: dict[str, str] | None = DEVICE
    ) -> OpenedSession:
        redisdb.sadd(keys.user_identities("alice"), identity)
        body: dict[str, Any] = {"connectionType": "WebSocket", "identity": identity, "holdUpMode": hold_up}
        if device is not None:
            body["push"] = device
        response = requests.post(
            f"{server.base_url}/identity/setup",
            json=body,
            headers={"Authorization": f"Bearer {make_token('alice')}"},
            timeout=5,
        )
        assert response.status_code == 200, response.text
        token = response.json()["webSocketToken"]
        session_id = redisdb.get(keys.websocket_token(identity, hash_token(token)))
        assert isinstance(session_id, bytes)
        return OpenedSession(identity, token, session_id.decode())

    return open_one
