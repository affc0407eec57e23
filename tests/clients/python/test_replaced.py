"""Two copies of an app past the per-user session limit: the SDK's guard stops their `replaced` carousel."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from typing import Any

import pytest
from vora_client import Connection, EventStream, ReconnectPolicy, State, Transport, TransportChoice, VoraClient, connect

from testbed.ports import free_port
from testbed.vora_server import RunningServer
from tests.harness.sdk import IDENTITY, SERVER_KEY, ServerFactory, real_transport
from tests.harness.server_api import publish_event

pytestmark = [pytest.mark.slow, pytest.mark.ws]

QUICK = ReconnectPolicy(crowd_window=0.3, alone_window=0.1, backoff_cap=1.0, rng=random.Random(3))
Tokens = Callable[..., Callable[[], Any]]


class CountingTokens:
    """An access-token provider that counts its calls: the streams call it once per setup (no subscription)."""

    def __init__(self, provider: Callable[[], Any]) -> None:
        self.provider = provider
        self.calls = 0

    async def __call__(self) -> str:
        """Return a fresh token and count the call."""
        self.calls += 1
        token: str = await self.provider()
        return token


class SetUpBeforeOpens:
    """The real transport, with another device setting up a session on the user just before the chosen opens."""

    def __init__(self, inner: Transport, other_device: VoraClient, before: set[int]) -> None:
        self._inner = inner
        self.name = inner.name
        self._other_device = other_device
        self._before = before
        self.opens = 0

    async def open(self, token: str, last_event_id: str | None, timeout: float) -> Connection:
        """Let the other device take the session slot on the chosen opens, then open the real transport."""
        self.opens += 1
        if self.opens in self._before:
            await self._other_device.setup(IDENTITY)  # the stream's session, not open yet, is the oldest: ended
        return await self._inner.open(token, last_event_id, timeout)


class DownThenEvicted:
    """The real transport, down on chosen opens (a closed port), another device setting up before chosen others."""

    def __init__(self, inner: Transport, down: Transport, other_device: VoraClient, plan: dict[int, str]) -> None:
        self._inner = inner
        self._down = down
        self.name = inner.name
        self._other_device = other_device
        self._plan = plan  # open number -> "down" or "evicted"
        self.opens = 0

    async def open(self, token: str, last_event_id: str | None, timeout: float) -> Connection:
        """Open through the closed port, or let the other device take the session first, or open as is."""
        self.opens += 1
        what = self._plan.get(self.opens)
        if what == "down":
            return await self._down.open(token, last_event_id, timeout)  # refused by the kernel: ConnectionFailed
        if what == "evicted":
            await self._other_device.setup(IDENTITY)
        return await self._inner.open(token, last_event_id, timeout)


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until a condition about the streams holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_two_copies_of_an_app_stop_evicting_each_other(
    make_server: ServerFactory, owner: Callable[..., None], tokens: Tokens, transport: TransportChoice
) -> None:
    """With one session allowed per user, two streams evict each other once each; then one closes with replaced."""
    owner("alice")

    async def scenario(server: RunningServer) -> None:
        first_tokens, second_tokens = CountingTokens(tokens("alice")), CountingTokens(tokens("alice"))
        async with (
            VoraClient(server.base_url, first_tokens) as first_client,
            VoraClient(server.base_url, second_tokens) as second_client,
        ):
            first = await connect(first_client, IDENTITY, policy=QUICK, transport=transport)
            await until(lambda: first.state is State.OPEN)
            second = await connect(second_client, IDENTITY, policy=QUICK, transport=transport)
            streams = (first, second)
            await until(lambda: any(stream.state is State.CLOSED for stream in streams))
            [loser] = [stream for stream in streams if stream.state is State.CLOSED]
            [winner] = [stream for stream in streams if stream is not loser]
            assert loser.close_reason == "replaced"
            await until(lambda: winner.state is State.OPEN)
            # Two setups to start, then one setup after replaced for each (max_replaced_setups=1): four in all. An
            # eviction that lands before the evicted stream opened shows as a 401, and counts as a replaced too.
            assert first_tokens.calls + second_tokens.calls == 4
            event_id = await asyncio.to_thread(
                publish_event, server.server_api_url, SERVER_KEY, IDENTITY, "presence", {"status": "busy"}
            )
            received = await winner.next_event(10)
            while received["type"] != "presence":  # the replaced notice of the fight comes first
                received = await winner.next_event(10)
            assert received["eventId"] == event_id
            assert winner.state is State.OPEN
            assert first_tokens.calls + second_tokens.calls == 4, "the survivor holds its session"
            await winner.close()

    with make_server(max_sessions_per_identity="1") as server:
        asyncio.run(scenario(server))


def test_the_guard_is_an_option_a_single_replacement_still_recovers(
    make_server: ServerFactory, owner: Callable[..., None], tokens: Tokens
) -> None:
    """One replaced sets up again; a second within replaced_window closes the stream; a larger allowance recovers."""
    owner("alice")

    async def scenario(server: RunningServer) -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream: EventStream = await connect(client, IDENTITY, policy=QUICK)
            await until(lambda: stream.state is State.OPEN)
            await client.setup(IDENTITY)  # another device, once: the stream's session is the oldest
            await until(lambda: sum(c.current is State.OPEN for c in stream.changes) == 2)
            await client.setup(IDENTITY)  # again within the window: a carousel, as far as the SDK can tell
            await until(lambda: stream.state is State.CLOSED)
            assert stream.close_reason == "replaced"

            patient = await connect(client, IDENTITY, policy=QUICK, max_replaced_setups=2)
            await until(lambda: patient.state is State.OPEN)
            for opens in (2, 3):
                await client.setup(IDENTITY)
                await until(lambda: sum(c.current is State.OPEN for c in patient.changes) == opens)  # noqa: B023 - awaited in the loop
            assert patient.state is State.OPEN
            await patient.close()

    with make_server(max_sessions_per_identity="1") as server:
        asyncio.run(scenario(server))


@pytest.mark.parametrize("transport", ["websocket", "sse"])
@pytest.mark.parametrize("evicted_at_start", [True, False], ids=["both-before-open", "notice-then-before-open"])
def test_a_session_ended_before_its_stream_opened_counts_as_replaced(
    make_server: ServerFactory,
    owner: Callable[..., None],
    tokens: Tokens,
    transport: TransportChoice,
    evicted_at_start: bool,
) -> None:
    """A fresh session refused (401) at its first open counts toward the guard as a replaced notice does."""
    owner("alice")

    async def scenario(server: RunningServer) -> None:
        async with (
            VoraClient(server.base_url, tokens("alice")) as client,
            VoraClient(server.base_url, tokens("alice")) as other_device,
        ):
            evicted_before = {1, 2} if evicted_at_start else {2}
            wrapped = SetUpBeforeOpens(real_transport(server, transport), other_device, evicted_before)
            stream = await connect(client, IDENTITY, policy=QUICK, transport=wrapped)
            if not evicted_at_start:
                await until(lambda: stream.state is State.OPEN)
                await other_device.setup(IDENTITY)  # the replaced notice: the one setup the guard allows
            # Without the count, the stream sets up again and opens a third time (the carousel goes on).
            await until(lambda: stream.state is State.CLOSED or wrapped.opens >= 3)
            assert stream.state is State.CLOSED
            assert stream.close_reason == "replaced"
            assert wrapped.opens == 2
            refused = [change for change in stream.changes if change.current is State.RECONNECTING]
            # One setup again in all: after the first 401, or after the notice; the second eviction closes the stream.
            expected: list[tuple[str, int | None]] = (
                [("session over", 401)] if evicted_at_start else [("replaced", None)]
            )
            assert [(change.reason, change.code if change.code == 401 else None) for change in refused] == expected

    with make_server(max_sessions_per_identity="1") as server:
        asyncio.run(scenario(server))


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_a_session_ended_before_its_first_open_counts_after_a_failed_connection_too(
    make_server: ServerFactory, owner: Callable[..., None], tokens: Tokens, transport: TransportChoice
) -> None:
    """A fresh session's first open fails to connect, the next is refused with 401: that 401 counts as a replaced."""
    owner("alice")

    async def scenario(server: RunningServer, closed_port: RunningServer) -> None:
        setups = CountingTokens(tokens("alice"))
        async with (
            VoraClient(server.base_url, setups) as client,
            VoraClient(server.base_url, tokens("alice")) as other_device,
        ):
            plan = {1: "down", 2: "evicted", 3: "down", 4: "evicted"}
            wrapped = DownThenEvicted(
                real_transport(server, transport), real_transport(closed_port, transport), other_device, plan
            )
            stream = await connect(client, IDENTITY, policy=QUICK, transport=wrapped)
            # Without the count, the stream sets up a third time and its fifth open passes (the carousel goes on).
            await until(lambda: stream.state is State.CLOSED or wrapped.opens >= 5)
            assert stream.state is State.CLOSED
            assert stream.close_reason == "replaced"
            assert (wrapped.opens, setups.calls) == (4, 2)

    with make_server(max_sessions_per_identity="1") as server:
        asyncio.run(scenario(server, dataclasses.replace(server, port=free_port())))  # nothing listens there
