"""The Python SDK's journey with access tokens from the real dev authorization server (client credentials)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vora_client import State, VoraClient, connect

from testbed.vora_server import RunningServer, running_server
from testbed.wait import wait_for
from tests.harness.devauth import DevAuth, DevAuthUnavailable, node_binary
from tests.harness.oauth import SERVICE_CLIENT, SERVICE_SECRET, oauth_env
from tests.harness.oauth_flow import ClientCredentials
from tests.harness.sdk import IDENTITY, SERVER_KEY
from tests.harness.server_api import end_sessions, publish_event
from tests.harness.tokens import AUDIENCE
from vora.core.catalog import ALL_SCOPES

pytestmark = [pytest.mark.slow, pytest.mark.ws, pytest.mark.oauth]

# Seconds: the journey outlives its first access token. Long enough that a loaded machine (the whole suite
# beside it) still gets identities, setup, subscribe and the first event done on one token.
TOKEN_TTL = 6


@pytest.fixture
def devauth(tmp_path: Path) -> Iterator[DevAuth]:
    """Run the dev authorization server with a service client whose access tokens live TOKEN_TTL seconds."""
    provider = DevAuth(
        audience=AUDIENCE,
        users={"carol": "carol-s3cret"},
        service_clients={SERVICE_CLIENT: SERVICE_SECRET},
        access_token_ttl=TOKEN_TTL,
        workdir=tmp_path / "devauth",
    )
    (tmp_path / "devauth").mkdir()
    try:
        node_binary()
    except DevAuthUnavailable as exc:
        pytest.skip(str(exc))
    with provider:
        yield provider


@pytest.fixture
def trusting_server(redis_proc: Any, devauth: DevAuth, tmp_path: Path) -> Iterator[RunningServer]:
    """Serve VORA trusting only the dev authorization server, with the server API open to publish."""
    env = oauth_env(redis_proc, devauth, VORA_SERVER_API_KEYS=SERVER_KEY, VORA_WS_HEARTBEAT_INTERVAL="1")
    with running_server(env, tmp_path / "vora") as running:
        yield running


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_journey_with_tokens_from_the_dev_authorization_server(
    trusting_server: RunningServer, devauth: DevAuth, owns: Callable[[str, str], None], transport: str
) -> None:
    """identities, stream (setup, subscribe), events, a token refreshed after its expiry's 401, logout ends it."""
    owns(SERVICE_CLIENT, IDENTITY)
    tokens = ClientCredentials(devauth.discovery()["token_endpoint"], SERVICE_CLIENT, SERVICE_SECRET, ALL_SCOPES)

    def publish(event_type: str, data: dict[str, Any]) -> str:
        return publish_event(trusting_server.server_api_url, SERVER_KEY, IDENTITY, event_type, data)

    async def scenario() -> None:
        async with VoraClient(trusting_server.base_url, tokens) as client:
            assert await client.identities() == [IDENTITY]
            stream = await connect(client, IDENTITY, events=["callRinging", "presence"], transport=transport)
            # A session gets what is published after its setup: publish once the stream is open, not before.
            await stream.wait_open(20)
            first = await asyncio.to_thread(publish, "callRinging", {"callId": "c-1", "direction": "inbound"})
            try:
                assert (await stream.next_event(20))["eventId"] == first
            except TimeoutError:
                fetched, refreshes = len(tokens.fetched), tokens.refreshes
                pytest.fail(f"no first event; {fetched} tokens, {refreshes} refreshes: {stream.changes}")
            assert (len(tokens.fetched), tokens.refreshes) == (1, 0), stream.changes

            # The access token expires; the session ends under the stream, whose new setup is refused (401)
            # until the provider fetched a fresh token.
            await asyncio.to_thread(wait_for, lambda: time.time() > tokens.expires_at + 1, 10, what="token expiry")
            await asyncio.to_thread(end_sessions, trusting_server.server_api_url, SERVER_KEY, IDENTITY, "disconnected")
            assert (await stream.next_event(10))["data"]["reason"] == "disconnected"
            async with asyncio.timeout(20):
                while sum(change.current is State.OPEN for change in stream.changes) < 2:
                    await asyncio.sleep(0.02)
            second = await asyncio.to_thread(publish, "presence", {"status": "busy"})
            assert (await stream.next_event(10))["eventId"] == second
            assert (len(tokens.fetched), tokens.refreshes) == (2, 1)
            assert len(set(tokens.fetched)) == 2

            await client.logout(IDENTITY)
            terminated = await stream.next_event(10)
            assert terminated["data"]["reason"] == "logout"
            async with asyncio.timeout(10):
                assert await stream.wait_closed() == "logout"
            assert stream.state is State.CLOSED

    asyncio.run(scenario())
