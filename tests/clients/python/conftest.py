"""Fixtures for the Python SDK's tests: a real VORA on loopback, real tokens, the server API to publish."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import AUDIENCE, ISSUER, TokenFactory
from tests.harness.server_api import publish_event
from tests.harness.vora_server import RunningServer, running_server
from vora.store.directory import Directory

IDENTITY = "910111000"
SERVER_KEY = "sdk-test-server-key-0123456789abcdefghijklmnop"
ServerFactory = Callable[..., contextlib.AbstractContextManager[RunningServer]]


@pytest.fixture(scope="module")
def sdk_env(redis_proc: Any, key_dir: Path, dev_key_pem: bytes, jwks_path: Path) -> dict[str, str]:
    """Return the VORA_* variables of an SDK test server: heartbeats every second, a server API key."""
    return {
        "VORA_REDIS_URL": f"redis://{redis_proc.host}:{redis_proc.port}/0",
        "VORA_DEV_KEY": str(key_dir / "dev-key.pem"),
        "VORA_OAUTH_JWKS": str(jwks_path),
        "VORA_OAUTH_ISSUER": ISSUER,
        "VORA_OAUTH_AUDIENCE": AUDIENCE,
        "VORA_WS_HEARTBEAT_INTERVAL": "1",
        "VORA_GRACEFUL_TIMEOUT": "5",
        "VORA_SERVER_API_KEYS": SERVER_KEY,
    }


@pytest.fixture(scope="module")
def server(sdk_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Serve VORA with one gevent worker for the whole module."""
    with running_server(sdk_env, tmp_path_factory.mktemp("sdk-server")) as running:
        yield running


@pytest.fixture
def make_server(sdk_env: dict[str, str], tmp_path: Path) -> ServerFactory:
    """Start a dedicated server with some settings changed."""

    def start(workers: int = 1, **overrides: str) -> contextlib.AbstractContextManager[RunningServer]:
        env = {**sdk_env, **{f"VORA_{k.upper()}": v for k, v in overrides.items()}}
        return running_server(env, tmp_path, workers=workers)

    return start


@pytest.fixture
def owner(redisdb: redis.Redis) -> Callable[[str, str], None]:
    """Give a user an identity in the directory."""

    def own(subject: str, identity: str = IDENTITY) -> None:
        Directory(redisdb).add(subject, [identity])  # as provisioning does: the directory is marked provisioned

    return own


@pytest.fixture
def tokens(make_token: TokenFactory) -> Callable[..., Callable[[], Any]]:
    """Return an SDK token provider that mints a fresh access token per call, as an OAuth refresh would."""

    def provider(subject: str = "alice", **options: Any) -> Callable[[], Any]:
        async def token() -> str:
            return make_token(subject, **options)

        return token

    return provider


@pytest.fixture
def publish(server: RunningServer) -> Callable[..., str]:
    """Publish events to the module's server through its server API."""

    def send(event_type: str, data: dict[str, Any], identity: str = IDENTITY, on: RunningServer | None = None) -> str:
        return publish_event((on or server).server_api_url, SERVER_KEY, identity, event_type, data)

    return send
