"""The Python SDK's stream against a real VORA when the app's access-token provider fails, refuses or hangs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from vora_client import (
    AccessTokenProviderFailed,
    AccessTokenRefused,
    EventStream,
    ReconnectPolicy,
    State,
    StateChange,
    TransportChoice,
    Unauthorized,
    VoraClient,
    connect,
)

from testbed.vora_server import RunningServer
from tests.harness.sdk import IDENTITY, SERVER_KEY
from tests.harness.server_api import end_sessions
from tests.harness.tokens import TokenFactory

pytestmark = [pytest.mark.slow, pytest.mark.ws]

QUICK = ReconnectPolicy(crowd_window=0.3, alone_window=0.1, backoff_cap=1.0, rng=random.Random(5))
Publish = Callable[..., str]
FAILED = "the access token provider failed"


class ScriptedTokens:
    """The app's provider: real tokens, except that the next calls follow a plan ("fail", "refuse", "hold")."""

    def __init__(self, mint: Callable[[], str]) -> None:
        self._mint = mint
        self.plan: list[str] = []
        self.calls = 0
        self.cancelled = 0
        self.failures = 0
        self.failed = asyncio.Event()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> str:
        """Follow the plan's next step (an OAuth server out of reach, a revoked refresh token, a hang), else mint."""
        self.calls += 1
        step = self.plan.pop(0) if self.plan else "mint"
        if step == "fail":
            self.failures += 1
            self.failed.set()
            raise OSError("the authorization server is unreachable")
        if step == "refuse":
            raise AccessTokenRefused("the refresh token was revoked")
        if step == "hold":
            self.holding.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return self._mint()

    def notice(self, _: object) -> None:
        """Wake until_failures (the stream's on_state): the stream may have closed instead of retrying."""
        self.failed.set()

    async def until_failures(self, count: int, stream: EventStream) -> None:
        """Wait until the provider has failed count times, failing the test if the stream closes instead."""
        async with asyncio.timeout(20):
            while self.failures < count:
                assert stream.state is not State.CLOSED, f"the stream closed ({stream.close_reason}), no retry"
                self.failed.clear()
                await self.failed.wait()


def reconnects(changes: list[StateChange]) -> list[str]:
    """Return the reasons of the transitions to reconnecting."""
    return [change.reason for change in changes if change.current is State.RECONNECTING]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_a_provider_that_fails_twice_delays_the_stream_which_then_resumes(
    server: RunningServer, owner: Callable[..., None], make_token: TokenFactory, publish: Publish, transport: str
) -> None:
    """A provider failing twice in a new setup is retried with backoff; what was published meanwhile arrives once."""
    owner("alice")

    async def scenario() -> None:
        tokens = ScriptedTokens(lambda: make_token("alice"))
        errors: list[Exception] = []
        chosen: TransportChoice = "websocket" if transport == "websocket" else "sse"
        async with VoraClient(server.base_url, tokens) as client:
            stream = await connect(
                client, IDENTITY, policy=QUICK, transport=chosen, on_error=errors.append, on_state=tokens.notice
            )
            await stream.wait_open(20)
            first = await asyncio.to_thread(publish, "presence", {"status": "busy"})
            assert (await stream.next_event(10))["eventId"] == first
            seen = len(stream.changes)
            tokens.plan = ["fail", "fail", "hold"]  # the third call answers once the test has published
            await asyncio.to_thread(end_sessions, server.server_api_url, SERVER_KEY, IDENTITY, "disconnected")
            assert (await stream.next_event(10))["data"]["reason"] == "disconnected"
            await tokens.until_failures(2, stream)
            async with asyncio.timeout(20):
                await tokens.holding.wait()
            meanwhile = [await asyncio.to_thread(publish, "presence", {"status": s}) for s in ("away", "available")]
            assert stream.state is not State.OPEN
            tokens.release.set()
            assert [(await stream.next_event(20))["eventId"] for _ in meanwhile] == meanwhile
            last = await asyncio.to_thread(publish, "presence", {"status": "busy"})
            assert (await stream.next_event(10))["eventId"] == last  # nothing delivered twice in between
            changes = stream.changes[seen:]
            assert [r for r in reconnects(changes) if r.startswith(FAILED)] == [
                f"{FAILED}: OSError('the authorization server is unreachable')"
            ] * 2, changes
            assert State.CLOSED not in [change.current for change in changes]
            assert [type(e) for e in errors] == [AccessTokenProviderFailed] * 2
            assert all(isinstance(e, AccessTokenProviderFailed) and not e.refused for e in errors)
            await stream.close()

    asyncio.run(scenario())


def test_a_provider_that_says_the_user_is_logged_out_stops_the_stream_unauthorized(
    server: RunningServer, owner: Callable[..., None], make_token: TokenFactory
) -> None:
    """AccessTokenRefused from the provider closes the stream with reason unauthorized, with no retry."""
    owner("alice")

    async def scenario() -> None:
        tokens = ScriptedTokens(lambda: make_token("alice"))
        errors: list[Exception] = []
        async with VoraClient(server.base_url, tokens) as client:
            tokens.plan = ["refuse"]
            stream = await connect(client, IDENTITY, policy=QUICK, on_error=errors.append)
            async with asyncio.timeout(10):
                assert await stream.wait_closed() == "unauthorized"
            assert [change.current for change in stream.changes] == [State.CONNECTING, State.CLOSED]
            assert isinstance(stream.error, AccessTokenProviderFailed)
            assert stream.error.refused
            assert isinstance(stream.error.__cause__, AccessTokenRefused)
            assert errors == [stream.error]
            assert tokens.calls == 1
            # Outside a stream the provider's failure reaches the caller, as a 401 the SDK made.
            tokens.plan = ["fail"]
            with pytest.raises(AccessTokenProviderFailed) as failed:
                await client.identities()
            assert (failed.value.status, failed.value.refused) == (401, False)

    asyncio.run(scenario())


def test_a_plain_function_may_provide_the_token(
    server: RunningServer, owner: Callable[..., None], make_token: TokenFactory, publish: Publish
) -> None:
    """A provider that is a plain function returning a token (one the app holds) serves REST and the stream."""
    owner("alice")
    token = make_token("alice")

    async def scenario() -> None:
        async with VoraClient(server.base_url, lambda: token) as client:
            assert await client.identities() == [IDENTITY]
            stream = await connect(client, IDENTITY, policy=QUICK)
            await stream.wait_open(10)
            published = await asyncio.to_thread(publish, "presence", {"status": "busy"})
            assert (await stream.next_event(10))["eventId"] == published
            await stream.close()

    asyncio.run(scenario())


def test_a_token_setup_refuses_even_after_a_refresh_stops_the_stream_unauthorized(
    server: RunningServer, owner: Callable[..., None], make_token: TokenFactory
) -> None:
    """A provider whose tokens VORA refuses (a 401 to setup, and again after the refresh) ends it as unauthorized."""
    owner("alice")
    expired = make_token("alice", now=0)  # signed by a trusted key, long expired: refused however often it is sent

    async def provider() -> str:
        return expired

    async def scenario() -> None:
        async with VoraClient(server.base_url, provider) as client:
            stream = await connect(client, IDENTITY, policy=QUICK)
            async with asyncio.timeout(10):
                assert await stream.wait_closed() == "unauthorized"  # the TypeScript SDK's reason
            assert isinstance(stream.error, Unauthorized)

    asyncio.run(scenario())


def test_a_provider_that_hangs_is_given_up_after_its_time_limit_and_asked_again(
    server: RunningServer, owner: Callable[..., None], make_token: TokenFactory, publish: Publish
) -> None:
    """A provider call that never answers is abandoned after access_token_timeout; the next call opens the stream."""
    owner("alice")

    async def scenario() -> None:
        tokens = ScriptedTokens(lambda: make_token("alice"))
        errors: list[Exception] = []
        async with VoraClient(server.base_url, tokens, access_token_timeout=0.3) as client:
            tokens.plan = ["hold"]  # never released
            stream = await connect(client, IDENTITY, policy=QUICK, on_error=errors.append)
            await stream.wait_open(20)
            assert (tokens.calls, tokens.cancelled) == (2, 1)
            assert reconnects(stream.changes) == ["the access token provider gave no token within 0.3 s"]
            assert [type(e) for e in errors] == [AccessTokenProviderFailed]
            published = await asyncio.to_thread(publish, "presence", {"status": "busy"})
            assert (await stream.next_event(10))["eventId"] == published
            await stream.close()

    asyncio.run(scenario())
