"""Tests of the Python SDK against a real VORA: the journey, resume, each channelTerminated reason, gaps."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from vora_client import (
    Connection,
    ConnectionFailed,
    EventStream,
    MalformedFrame,
    NotFound,
    ReconnectPolicy,
    State,
    StateChange,
    StreamClosed,
    Transport,
    TransportChoice,
    VoraClient,
    connect,
)
from vora_client.stream import CHANGES_KEPT

from testbed.ports import free_port
from testbed.vora_server import LIVE_TIMEOUT, RunningServer, is_live
from testbed.wait import wait_for
from tests.harness.sdk import IDENTITY, ServerFactory, real_transport, until
from tests.harness.server_api import end_sessions, list_sessions, publish_batch, publish_event
from tests.harness.tokens import TokenFactory

pytestmark = [pytest.mark.slow, pytest.mark.ws]

SERVER_KEY = "sdk-test-server-key-0123456789abcdefghijklmnop"
QUICK = ReconnectPolicy(crowd_window=0.3, alone_window=0.1, backoff_cap=1.0, rng=random.Random(1))
Publish = Callable[..., str]
Tokens = Callable[..., Callable[[], Any]]
# Forced either way: what the stream guarantees, it guarantees on both transports.
TRANSPORTS = pytest.mark.parametrize("transport", ["websocket", "sse"])
ROOT = Path(__file__).resolve().parents[3]
# Apps leaving asyncio.run with an open stream: about half of them met the stream reading a frame that had just
# arrived, the moment at which a swallowed cancellation left it reading for ever; each round takes well under 1 s.
ABANDON_ROUNDS = 6
ABANDON_LIMIT = 30.0
# The queue of a stream read through on_event alone: small, so that a queue filling regardless shows at once.
CALLBACK_QUEUE_SIZE = 3


def used(stream: EventStream) -> set[str]:
    """Return the transports the stream's transitions recorded."""
    return {change.transport for change in stream.changes}


async def take(stream: EventStream, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Read count events that are not heartbeats from the stream."""
    return [await stream.next_event(timeout) for _ in range(count)]


@TRANSPORTS
def test_journey_identities_setup_subscribe_stream_logout(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """The whole client journey: events arrive in order, logout ends the stream with channelTerminated logout."""
    owner("alice")

    async def journey() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            assert await client.identities() == [IDENTITY]
            states: list[State] = []
            stream = await connect(
                client,
                IDENTITY,
                events=["callRinging", "callEnded"],
                on_state=lambda c: states.append(c.current),
                transport=transport,
            )
            await until(stream, State.OPEN)
            [session] = await asyncio.to_thread(list_sessions, server.server_api_url, SERVER_KEY, IDENTITY)
            assert session["connectionType"] == ("ServerSentEvents" if transport == "sse" else "WebSocket")
            ids = [
                await asyncio.to_thread(publish, "callRinging", {"callId": "c-1", "direction": "inbound"}),
                await asyncio.to_thread(publish, "presence", {"status": "busy"}),  # not subscribed
                await asyncio.to_thread(publish, "callEnded", {"callId": "c-1"}),
            ]
            got = await take(stream, 2)
            assert [e["eventId"] for e in got] == [ids[0], ids[2]]
            assert stream.last_event_id == ids[2]
            await client.logout(IDENTITY)
            terminated = await stream.next_event(10)
            assert terminated["type"] == "channelTerminated"
            assert terminated["data"]["reason"] == "logout"
            assert await stream.wait_closed() == "logout"
            assert states == [State.CONNECTING, State.OPEN, State.CLOSED]
            assert used(stream) == {transport}

    asyncio.run(journey())


@TRANSPORTS
def test_resume_after_the_worker_dies_loses_and_repeats_nothing(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """A worker SIGKILLed mid-stream: the SDK reconnects with lastEventId and gets what it missed, once each."""
    owner("alice")

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(client, IDENTITY, subscribe_all=True, policy=QUICK, transport=transport)
            await until(stream, State.OPEN)
            first = await asyncio.to_thread(publish, "presence", {"status": "available"})
            assert (await stream.next_event(10))["eventId"] == first
            token = stream.session.web_socket_token if stream.session else ""
            mark = len(stream.changes)  # before the cause: the stream may pass reconnecting before until() runs
            for pid in server.worker_pids():
                os.kill(pid, signal.SIGKILL)
            await until(stream, State.RECONNECTING, since=mark)
            missed = [await asyncio.to_thread(publish, "callRinging", {"callId": f"c-{n}"}) for n in range(5)]
            got = await take(stream, 5, timeout=40)
            assert [e["eventId"] for e in got] == missed
            after = await asyncio.to_thread(publish, "presence", {"status": "busy"})
            assert (await stream.next_event(10))["eventId"] == after  # nothing repeated before it
            drop = next(c for c in stream.changes if c.current is State.RECONNECTING)
            assert drop.code == 1006
            assert stream.session is not None
            assert stream.session.web_socket_token == token  # resumed, not set up again
            assert used(stream) == {transport}
            await stream.close()

    asyncio.run(scenario())


@TRANSPORTS
def test_a_stream_cut_before_its_first_event_resumes_from_where_it_opened(
    make_server: ServerFactory,
    server: RunningServer,
    owner: Callable[..., None],
    tokens: Tokens,
    publish: Publish,
    transport: TransportChoice,
) -> None:
    """Its instance SIGKILLed before any event arrived, the stream resumes from channelOpened's position: 0 lost."""
    owner("alice")
    positions: list[str] = []

    async def scenario(edge: RunningServer) -> None:
        async with VoraClient(edge.base_url, tokens("alice")) as client:
            stream = await connect(
                client, IDENTITY, subscribe_all=True, policy=QUICK, transport=transport, on_position=positions.append
            )
            async with asyncio.timeout(20):
                while not positions:  # channelOpened, the connection's only message so far
                    await asyncio.sleep(0.02)
            opened_at = positions[0]
            assert stream.last_event_id == opened_at
            mark = len(stream.changes)  # before the cause: the stream may pass reconnecting before until() runs
            edge.process.kill()
            await until(stream, State.RECONNECTING, since=mark)
            # Published through another instance while none can serve the stream: a reconnect without a
            # lastEventId would start live, after all of them.
            missed = [await asyncio.to_thread(publish, "callRinging", {"callId": f"m-{n}"}) for n in range(3)]
            await asyncio.to_thread(restart, edge)
            got = await take(stream, 3, timeout=40)
            assert [e["eventId"] for e in got] == missed
            after = await asyncio.to_thread(publish, "callEnded", {"callId": "m-0"})
            assert (await stream.next_event(10))["eventId"] == after  # nothing repeated, no resumeGap before it
            assert positions == [opened_at, *missed, after]
            await stream.close()

    with make_server() as edge:
        asyncio.run(scenario(edge))


class DroppingTransport:
    """A real transport that records each open's lastEventId; with drop, the first publishes an event, then drops.

    That first connection is admitted (VORA answered its handshake), and closed before the stream reads its
    channelOpened: a phone whose radio died as the socket opened.
    """

    def __init__(self, inner: Transport, publish: Publish, *, drop: bool = True) -> None:
        self._inner = inner
        self.name = inner.name
        self._publish = publish
        self._drop = drop
        self.sent: list[str | None] = []
        self.published: list[str] = []

    async def open(self, token: str, last_event_id: str | None, timeout: float) -> Connection:
        """Open the real transport; the first time, with drop, publish an event, then close the connection unread."""
        self.sent.append(last_event_id)
        if not self._drop or len(self.sent) > 1:
            return await self._inner.open(token, last_event_id, timeout)
        self.published.append(await asyncio.to_thread(self._publish, "callRinging", {"callId": "ringing"}))
        connection = await self._inner.open(token, last_event_id, timeout)
        await connection.close()
        raise ConnectionFailed("dropped before channelOpened was read")


@TRANSPORTS
def test_a_first_open_sends_setups_position_so_a_drop_before_channel_opened_loses_nothing(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """With no position, a stream opens with setup's lastEventId: an event before a dropped first open arrives once."""
    owner("alice")
    before = publish("presence", {"status": "away"})

    async def scenario() -> None:
        dropping = DroppingTransport(real_transport(server, transport), publish)
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(client, IDENTITY, subscribe_all=True, policy=QUICK, transport=dropping)
            try:
                got = await stream.next_event(20)
                assert stream.session is not None
                assert stream.session.last_event_id == before  # setup's position: the entry before the session
                assert dropping.sent == [before, before]
                assert got["eventId"] == dropping.published[0]
                after = await asyncio.to_thread(publish, "callEnded", {"callId": "ringing"})
                assert (await stream.next_event(10))["eventId"] == after  # E1 once, then what followed
            finally:
                await stream.close()

    asyncio.run(scenario())


@TRANSPORTS
def test_closing_an_open_stream_leaves_no_unretrieved_error_to_asyncio(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """Closing a stream whose read ends with the close reports nothing to asyncio's handler ('never retrieved')."""
    owner("alice")

    async def scenario() -> list[dict[str, Any]]:
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: reported.append(context))
        async with VoraClient(server.base_url, tokens("alice")) as client:
            for _ in range(3):  # the read's end and the close race: each round is one more chance to lose it
                stream = await connect(client, IDENTITY, subscribe_all=True, policy=QUICK, transport=transport)
                await until(stream, State.OPEN)  # subscribed: what is published now is the session's
                published = await asyncio.to_thread(publish, "presence", {"status": "away"})
                assert (await stream.next_event(20))["eventId"] == published
                await stream.close()
                gc.collect()
                await asyncio.sleep(0)
        return reported

    assert [context.get("message") for context in asyncio.run(scenario())] == []


def test_a_stream_keeps_its_newest_transitions_only_while_on_state_sees_every_one() -> None:
    """A stream retrying a refused address for long keeps the newest CHANGES_KEPT transitions; on_state gets all."""
    seen: list[StateChange] = []
    enough = asyncio.Event()

    def on_state(change: StateChange) -> None:
        seen.append(change)
        if len(seen) > CHANGES_KEPT + 10:
            enough.set()

    async def scenario() -> list[StateChange]:
        # Nothing listens on the port: every setup is refused by the kernel at once, and the backoff is capped near 0.
        fast = ReconnectPolicy(alone_window=0.0005, backoff_cap=0.0005, rng=random.Random(1))
        async with VoraClient(f"http://127.0.0.1:{free_port()}/vora", lambda: "token") as client:
            stream = await connect(client, IDENTITY, subscribe_all=True, policy=fast, on_state=on_state)
            try:
                async with asyncio.timeout(60):
                    await enough.wait()
            finally:
                await stream.close()
            return stream.changes

    kept = asyncio.run(scenario())
    assert len(kept) == CHANGES_KEPT
    assert kept == seen[-CHANGES_KEPT:]
    assert kept[-1].current is State.CLOSED


@TRANSPORTS
def test_a_stream_read_through_on_event_alone_queues_nothing_and_never_stops_at_queue_size(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, transport: TransportChoice
) -> None:
    """An app taking events through on_event alone gets every one past queue_size, and the queue keeps none."""
    owner("alice")
    count = 4 * CALLBACK_QUEUE_SIZE  # once the queue held queue_size of them, the stream waited for ever

    async def scenario() -> None:
        got: list[dict[str, Any]] = []
        all_in = asyncio.Event()

        def on_event(envelope: dict[str, Any]) -> None:
            got.append(envelope)
            if len(got) == count:
                all_in.set()

        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(
                client,
                IDENTITY,
                events=["callRinging"],
                policy=QUICK,
                transport=transport,
                queue_size=CALLBACK_QUEUE_SIZE,
                on_event=on_event,
            )
            try:
                await stream.wait_open(10)
                ringing = {"identity": IDENTITY, "type": "callRinging"}
                events = [{**ringing, "data": {"callId": f"c-{n}"}} for n in range(count)]
                ids = await asyncio.to_thread(publish_batch, server.server_api_url, SERVER_KEY, events)
                async with asyncio.timeout(5):
                    await all_in.wait()
                assert [envelope["eventId"] for envelope in got] == ids
            finally:
                await stream.close()
            assert [envelope async for envelope in stream] == []  # nothing was held for a reader that never came

    asyncio.run(scenario())


@TRANSPORTS
def test_a_position_of_the_apps_own_wins_over_setups(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """A stream given a lastEventId opens with it, not with setup's later position, and gets what followed it."""
    owner("alice")
    own = publish("presence", {"status": "away"})
    missed = publish("presence", {"status": "busy"})

    async def scenario() -> None:
        recording = DroppingTransport(real_transport(server, transport), publish, drop=False)
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(
                client, IDENTITY, subscribe_all=True, policy=QUICK, transport=recording, last_event_id=own
            )
            try:
                assert (await stream.next_event(10))["eventId"] == missed
                assert stream.session is not None
                assert stream.session.last_event_id == missed
                assert recording.sent == [own]
            finally:
                await stream.close()

    asyncio.run(scenario())


def restart(server: RunningServer) -> None:
    """Start a killed server again on its port and wait until it is live."""
    server.process.start()
    wait_for(lambda: is_live(server.port), LIVE_TIMEOUT, what="the instance to be live again")


@TRANSPORTS
@pytest.mark.parametrize("reason", ["disconnected"])
def test_a_session_ended_by_the_telephony_side_is_set_up_again(
    server: RunningServer,
    owner: Callable[..., None],
    tokens: Tokens,
    publish: Publish,
    reason: str,
    transport: TransportChoice,
) -> None:
    """After channelTerminated disconnected the SDK sets up a new session, subscribes again and streams on."""
    owner("alice")

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(client, IDENTITY, events=["presence"], policy=QUICK, transport=transport)
            await until(stream, State.OPEN)
            old_token = stream.session.web_socket_token if stream.session else ""
            mark = len(stream.changes)  # before the cause: the stream may pass reconnecting before until() runs
            await asyncio.to_thread(end_sessions, server.server_api_url, SERVER_KEY, IDENTITY, reason)
            terminated = await stream.next_event(10)
            assert terminated["data"]["reason"] == reason
            await until(stream, State.RECONNECTING, since=mark)
            await until(stream, State.OPEN)
            assert stream.session is not None
            assert stream.session.web_socket_token != old_token
            after = await asyncio.to_thread(publish, "presence", {"status": "away"})
            assert (await stream.next_event(10))["eventId"] == after
            assert used(stream) == {transport}
            await stream.close()

    asyncio.run(scenario())


class FirstSubscriptionFails(VoraClient):
    """A client counting its setups whose first subscription is cut (a phone's radio) or follows its session's end."""

    def __init__(self, *args: Any, ending: Callable[[], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ending = ending
        self.failed = False
        self.setups = 0

    async def setup(self, *args: Any, **kwargs: Any) -> Any:
        """Count the setup and pass it to VORA."""
        self.setups += 1
        return await super().setup(*args, **kwargs)

    async def subscribe(self, identity: str, events: Sequence[str] = (), *, subscribe_all: bool = False) -> None:
        """Fail the first call as a cut connection, or end the session before it; pass the rest to VORA."""
        if not self.failed:
            self.failed = True
            if self.ending is None:
                raise ConnectionFailed("connection reset before the answer")
            await asyncio.to_thread(self.ending)
        await super().subscribe(identity, events, subscribe_all=subscribe_all)


def test_a_subscription_cut_before_its_answer_is_retried_on_the_same_session(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish
) -> None:
    """A subscription that fails after its setup is retried on that session: no second one, none opened unfiltered."""
    owner("alice")

    async def scenario() -> None:
        cutting = FirstSubscriptionFails(server.base_url, tokens("alice"))
        async with cutting as client:
            stream = await connect(client, IDENTITY, events=["callEnded"], policy=QUICK)
            await until(stream, State.OPEN)
            assert cutting.failed
            # A second session would count toward the user's cap on the identity and, past it, evict another device's.
            assert cutting.setups == 1
            assert len(await asyncio.to_thread(list_sessions, server.server_api_url, SERVER_KEY, IDENTITY)) == 1
            await asyncio.to_thread(publish, "presence", {"status": "busy"})  # outside the subscription
            ended = await asyncio.to_thread(publish, "callEnded", {"callId": "c-1"})
            received = await stream.next_event(10)
            assert (received["type"], received["eventId"]) == ("callEnded", ended)
            await stream.close()

    asyncio.run(scenario())


def test_a_session_ended_before_its_subscription_is_replaced_by_a_new_setup(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish
) -> None:
    """VORA's 404 to a subscription whose session ended meanwhile makes the stream set up again, not close."""
    owner("alice")

    async def scenario() -> None:
        errors: list[Exception] = []
        ending = FirstSubscriptionFails(
            server.base_url,
            tokens("alice"),
            ending=lambda: end_sessions(server.server_api_url, SERVER_KEY, IDENTITY, "disconnected"),
        )
        async with ending as client:
            stream = await connect(client, IDENTITY, events=["callEnded"], policy=QUICK, on_error=errors.append)
            await until(stream, State.OPEN)
            assert ending.setups == 2
            assert [type(error).__name__ for error in errors] == ["NotFound"]
            ended = await asyncio.to_thread(publish, "callEnded", {"callId": "c-1"})
            received = await stream.next_event(10)
            assert (received["type"], received["eventId"]) == ("callEnded", ended)
            await stream.close()

    asyncio.run(scenario())


@TRANSPORTS
def test_stream_subscribe_applies_now_and_after_a_new_setup(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """stream.subscribe narrows the events at once, and the SDK applies it again to the session it sets up anew."""
    owner("alice")

    async def only_ended(stream: EventStream, call_id: str) -> None:
        await asyncio.to_thread(publish, "callHeld", {"callId": call_id})
        ended = await asyncio.to_thread(publish, "callEnded", {"callId": call_id})
        received = await stream.next_event(10)  # in order: a held call outside the subscription would come first
        assert (received["type"], received["eventId"]) == ("callEnded", ended)

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(client, IDENTITY, policy=QUICK, transport=transport)
            await until(stream, State.OPEN)
            await stream.subscribe(["callEnded"])
            await only_ended(stream, "c-1")
            mark = len(stream.changes)  # before the cause: the stream may pass reconnecting before until() runs
            await asyncio.to_thread(end_sessions, server.server_api_url, SERVER_KEY, IDENTITY, "disconnected")
            assert (await stream.next_event(10))["data"]["reason"] == "disconnected"
            await until(stream, State.RECONNECTING, since=mark)
            await until(stream, State.OPEN)
            await only_ended(stream, "c-2")  # a new session starts subscribed to everything
            await stream.close()

    asyncio.run(scenario())


@TRANSPORTS
def test_a_revoked_session_stops_the_stream(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, transport: TransportChoice
) -> None:
    """After channelTerminated revoked the stream closes for good and the iterator ends."""
    owner("alice")

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(client, IDENTITY, policy=QUICK, transport=transport)
            await until(stream, State.OPEN)
            await asyncio.to_thread(end_sessions, server.server_api_url, SERVER_KEY, IDENTITY, "revoked")
            seen = [envelope async for envelope in stream]
            assert [e["type"] for e in seen] == ["channelTerminated"]
            assert stream.close_reason == "revoked"
            assert used(stream) == {transport}

    asyncio.run(scenario())


@TRANSPORTS
def test_replaced_sets_up_again(
    make_server: ServerFactory, owner: Callable[..., None], tokens: Tokens, transport: TransportChoice
) -> None:
    """A session evicted as the oldest (replaced) is set up again by the SDK."""
    owner("alice")

    async def scenario(server: RunningServer) -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(client, IDENTITY, policy=QUICK, transport=transport)
            await until(stream, State.OPEN)
            mark = len(stream.changes)  # before the cause: the stream may pass reconnecting before until() runs
            await client.setup(IDENTITY)  # the second session evicts the first (one allowed)
            terminated = await stream.next_event(10)
            assert terminated["data"]["reason"] == "replaced"
            await until(stream, State.RECONNECTING, since=mark)
            await until(stream, State.OPEN)
            assert used(stream) == {transport}
            await stream.close()

    with make_server(max_sessions_per_identity="1") as server:
        asyncio.run(scenario(server))


@TRANSPORTS
def test_an_expired_session_is_set_up_again(
    make_server: ServerFactory, owner: Callable[..., None], tokens: Tokens, transport: TransportChoice
) -> None:
    """After channelTerminated tokenExpired (the session outlived VORA_SESSION_MAX_AGE) the SDK sets up again."""
    owner("alice")

    async def scenario(server: RunningServer) -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(client, IDENTITY, policy=QUICK, transport=transport)
            await until(stream, State.OPEN)
            old_token = stream.session.web_socket_token if stream.session else ""
            terminated = await stream.next_event(15)
            assert terminated["data"]["reason"] == "tokenExpired"
            await until(stream, State.RECONNECTING)
            async with asyncio.timeout(20):
                while stream.state is not State.OPEN or stream.session is None:
                    await asyncio.sleep(0.02)
            assert stream.session.web_socket_token != old_token
            assert used(stream) == {transport}
            await stream.close()

    with make_server(session_ttl="2", session_max_age="2", ws_lease_interval="0.3") as server:
        asyncio.run(scenario(server))


@TRANSPORTS
def test_maintenance_resumes_the_same_session_on_the_next_worker(
    make_server: ServerFactory, owner: Callable[..., None], tokens: Tokens, transport: TransportChoice
) -> None:
    """A draining worker (SIGTERM) says maintenance: the SDK resumes the same session and misses nothing."""
    owner("alice")

    async def scenario(server: RunningServer) -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(client, IDENTITY, subscribe_all=True, policy=QUICK, transport=transport)
            await until(stream, State.OPEN)
            token = stream.session.web_socket_token if stream.session else ""
            before = await asyncio.to_thread(
                publish_event, server.server_api_url, SERVER_KEY, IDENTITY, "presence", {"status": "busy"}
            )
            assert (await stream.next_event(10))["eventId"] == before  # the position to resume from
            [worker] = server.worker_pids()
            os.kill(worker, signal.SIGTERM)
            terminated = await stream.next_event(15)
            assert terminated["data"]["reason"] == "maintenance"
            missed = await asyncio.to_thread(
                publish_event, server.server_api_url, SERVER_KEY, IDENTITY, "presence", {"status": "away"}
            )
            assert (await stream.next_event(40))["eventId"] == missed
            drop = next(c for c in stream.changes if c.current is State.RECONNECTING)
            assert (drop.reason, drop.code) == ("maintenance", 1001)
            assert stream.session is not None
            assert stream.session.web_socket_token == token
            assert used(stream) == {transport}
            await stream.close()

    with make_server() as server:
        asyncio.run(scenario(server))


class TopOfTheWindow(random.Random):
    """A random source whose every draw is at the top of its range: a wait shows the bound it was drawn under."""

    def random(self) -> float:
        """Return 0.99."""
        return 0.99


async def announced(stream: EventStream, seconds: float | None = None, timeout: float = 10.0) -> None:
    """Wait until the stream has taken a reconnect window (this one, if given) from a channelOpened or heartbeat."""
    async with asyncio.timeout(timeout):
        while stream.reconnect_window is None or (seconds is not None and stream.reconnect_window != seconds):
            await asyncio.sleep(0.02)


def test_the_stream_keeps_the_announced_reconnect_window_and_each_heartbeat_updates_it(
    make_server: ServerFactory, owner: Callable[..., None], tokens: Tokens
) -> None:
    """reconnect_window is None, then channelOpened's reconnectWindowSeconds, then what the latest heartbeat says."""
    identities = [IDENTITY, "910111001", "910111002"]
    for identity in identities:
        owner("alice", identity)

    async def scenario(server: RunningServer) -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            first = EventStream(client, IDENTITY, policy=QUICK, transport="websocket")
            assert first.reconnect_window is None
            await first.start()
            await announced(first, 1.0)  # the instance's only socket, one a second
            others = [await connect(client, i, policy=QUICK, transport="websocket") for i in identities[1:]]
            for other in others:
                await announced(other)  # its socket counts from its channelOpened on
            await announced(first, 3.0)  # a heartbeat after the other two opened
            for stream in [first, *others]:
                await stream.close()

    with make_server(reconnect_rate="1") as server:
        asyncio.run(scenario(server))


def test_a_crowd_drop_and_maintenance_wait_within_the_announced_window_not_20_s(
    make_server: ServerFactory, owner: Callable[..., None], tokens: Tokens
) -> None:
    """A worker SIGKILLed (1006) or draining (maintenance), the instance announcing 2 s: the next attempt within 2 s."""
    owner("alice")
    changes: list[tuple[float, StateChange]] = []
    # Every draw at the top of its window (19.8 s of the 20 s fallback); a socket is stable at once, so the
    # maintenance after the reconnect is a first attempt too.
    policy = ReconnectPolicy(stable_after=0.0, rng=TopOfTheWindow())

    def first_attempt_after(reason: str) -> tuple[StateChange, float]:
        """Return the drop's transition and the seconds until the next attempt started, by the stream's own clock."""
        at = next(n for n, (_, c) in enumerate(changes) if c.current is State.RECONNECTING and c.reason == reason)
        dropped_at, drop = changes[at]
        attempt_at = next(when for when, c in changes[at + 1 :] if c.current is State.CONNECTING)
        return drop, attempt_at - dropped_at

    async def scenario(server: RunningServer) -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(
                client,
                IDENTITY,
                policy=policy,
                transport="websocket",
                on_state=lambda change: changes.append((time.monotonic(), change)),
            )
            await announced(stream, 2.0)
            [worker] = server.worker_pids()
            mark = len(stream.changes)  # before the cause: the stream may pass reconnecting before until() runs
            os.kill(worker, signal.SIGKILL)
            await until(stream, State.RECONNECTING, since=mark)
            await until(stream, State.OPEN, timeout=30)
            drop, waited = first_attempt_after("")
            assert drop.code == 1006
            assert drop.wait is not None
            assert drop.wait <= 2.0
            assert waited < 3.0
            [worker] = server.worker_pids()
            os.kill(worker, signal.SIGTERM)
            await until(stream, State.RECONNECTING, timeout=15)
            await until(stream, State.OPEN, timeout=30)
            drop, waited = first_attempt_after("maintenance")
            assert drop.code == 1001
            assert drop.wait is not None
            assert drop.wait <= 2.0
            assert waited < 3.0
            await stream.close()

    with make_server(reconnect_window_min="2", reconnect_window_max="2") as server:
        asyncio.run(scenario(server))


@TRANSPORTS
def test_resume_gap_reaches_the_app(
    make_server: ServerFactory,
    owner: Callable[..., None],
    tokens: Tokens,
    redisdb: redis.Redis,
    transport: TransportChoice,
) -> None:
    """Resuming after events no longer retained delivers resumeGap (and calls on_resume_gap) before the rest."""
    owner("alice")
    gaps: list[dict[str, Any]] = []

    async def scenario(server: RunningServer) -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            session = await client.setup(IDENTITY)
            await client.subscribe(IDENTITY, subscribe_all=True)
            events = [{"identity": IDENTITY, "type": "callRinging", "data": {"callId": f"c-{n}"}} for n in range(300)]
            answers = await asyncio.to_thread(publish_batch, server.server_api_url, SERVER_KEY, events)
            first, last = answers[0], answers[-1]
            stream = await connect(
                client,
                IDENTITY,
                session=session,
                last_event_id=first,
                policy=QUICK,
                on_resume_gap=gaps.append,
                transport=transport,
            )
            gap = await stream.next_event(10)
            assert gap["type"] == "resumeGap"
            rest = [await stream.next_event(10)]
            while rest[-1]["eventId"] != last:
                rest.append(await stream.next_event(10))
            numbers = [int(e["data"]["callId"].removeprefix("c-")) for e in rest]
            assert numbers == list(range(numbers[0], 300))
            assert numbers[0] > 1
            await stream.close()

    with make_server(stream_max_length="10") as server:
        asyncio.run(scenario(server))
    assert len(gaps) == 1


@TRANSPORTS
def test_missed_heartbeats_mark_a_dead_connection(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """A server that stops answering (SIGSTOP) is detected by missed heartbeats; the SDK reconnects after SIGCONT."""
    owner("alice")

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(
                client, IDENTITY, subscribe_all=True, policy=QUICK, heartbeat_timeout=3.0, transport=transport
            )
            await until(stream, State.OPEN)
            workers = server.worker_pids()
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)
            try:
                await until(stream, State.RECONNECTING, timeout=15)
            finally:
                for pid in workers:
                    os.kill(pid, signal.SIGCONT)
            change = next(c for c in stream.changes if c.current is State.RECONNECTING)
            assert change.code == 1006
            await until(stream, State.OPEN, timeout=30)
            after = await asyncio.to_thread(publish, "presence", {"status": "available"})
            assert (await stream.next_event(10))["eventId"] == after
            await stream.close()

    asyncio.run(scenario())


@TRANSPORTS
def test_wait_open_returns_once_an_event_published_right_after_reaches_the_stream(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """wait_open() returns once set up, subscribed and open: an event published at once is the stream's, each time."""
    owner("alice")

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            for round_ in range(3):
                stream = await connect(client, IDENTITY, events=["presence"], policy=QUICK, transport=transport)
                await stream.wait_open(10)
                assert stream.state is State.OPEN
                published = await asyncio.to_thread(publish, "presence", {"status": "busy"})
                assert (await stream.next_event(10))["eventId"] == published, round_
                await stream.wait_open(1)  # open: at once
                await stream.close()
                with pytest.raises(StreamClosed):
                    await stream.wait_open(1)

    asyncio.run(scenario())


@TRANSPORTS
def test_next_event_cancelled_as_its_event_arrives_ends_cancelled_and_leaves_the_event(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """A read cancelled once its event is queued but before it runs ends cancelled; the next read gets the event.

    on_event runs just before the stream queues the event, and the cancel it schedules runs ahead of the reader's
    wakeup that queueing schedules: the cancel always meets an event that is there. Python 3.11's wait_for (with a
    timeout) returned that event and dropped the cancellation; the timeout keeps wait_for's path taken.
    """
    owner("alice")
    readers: list[asyncio.Task[dict[str, Any]]] = []

    def cancel_the_reader(envelope: dict[str, Any]) -> None:
        if readers and not readers[0].done():
            asyncio.get_running_loop().call_soon(readers[0].cancel)

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(
                client, IDENTITY, events=["presence"], policy=QUICK, transport=transport, on_event=cancel_the_reader
            )
            try:
                await stream.wait_open(10)
                # Blocked in next_event before the event exists: the publish below yields to the loop first.
                readers.append(asyncio.create_task(stream.next_event(10)))
                published = await asyncio.to_thread(publish, "presence", {"status": "busy"})
                with pytest.raises(asyncio.CancelledError):
                    await readers[0]
                assert readers[0].cancelled()
                assert (await stream.next_event(10))["eventId"] == published  # not lost with the cancelled read
            finally:
                await stream.close()  # a failed check must not leave the stream reading while the loop closes

    asyncio.run(scenario())


class WrappedServer:
    """The real transport, each real frame passed through frames(): what it returns is what the stream reads.

    VORA sends only the frames it documents, so no server path sends those the subclasses add to the real ones.
    """

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.name = inner.name
        self.added_sent = 0  # frames the stream has read beyond the real ones

    async def open(self, token: str, last_event_id: str | None, timeout: float) -> Connection:
        """Open the real transport and wrap its connection."""
        return _WrappedConnection(await self._inner.open(token, last_event_id, timeout), self)

    def frames(self, text: str) -> list[str]:
        """Return what the stream reads for one real frame, that frame (as it is or changed) first."""
        return [text]


class _WrappedConnection:
    def __init__(self, inner: Connection, server: WrappedServer) -> None:
        self._inner = inner
        self._server = server
        self._pending: list[str] = []

    async def receive(self) -> str:
        if self._pending:
            self._server.added_sent += 1
            return self._pending.pop(0)
        first, *self._pending = self._server.frames(await self._inner.receive())
        return first

    async def close(self) -> None:
        await self._inner.close()


class NewerServer(WrappedServer):
    """The real transport, passing on what a newer server might send as well as its real frames.

    After each real channelOpened and heartbeat frame comes a copy whose type this SDK does not know, and the
    real channelTerminated comes with a reason it does not know. The stream reads them as any frame.
    """

    def frames(self, text: str) -> list[str]:
        """Return the frame with a copy of an unknown type after it, or channelTerminated with an unknown reason."""
        envelope = json.loads(text)
        if envelope["type"] == "channelTerminated":
            return [json.dumps({**envelope, "data": {**envelope["data"], "reason": "sessionMoved"}})]
        if envelope["type"] in {"channelOpened", "heartbeat"}:
            unknown = {**envelope, "type": "channelPaused", "data": {**envelope["data"], "resumeInSeconds": 3}}
            return [text, json.dumps(unknown)]
        return [text]


@TRANSPORTS
def test_lifecycle_types_and_reasons_a_newer_server_adds_are_ignored(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """Unknown lifecycle types never reach the app nor end the stream; an unknown ending reason sets up again."""
    owner("alice")
    inner = real_transport(server, transport)
    newer = NewerServer(inner)

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await EventStream(client, IDENTITY, events=["presence"], policy=QUICK, transport=newer).start()
            await stream.wait_open(10)
            async with asyncio.timeout(10):
                while newer.added_sent < 3:  # after channelOpened and two heartbeats (one a second)
                    await asyncio.sleep(0.02)
            published = await asyncio.to_thread(publish, "presence", {"status": "busy"})
            assert (await stream.next_event(10))["eventId"] == published
            assert [c.current for c in stream.changes] == [State.CONNECTING, State.OPEN]
            mark = len(stream.changes)  # before the cause: the stream may pass reconnecting before until() runs
            await asyncio.to_thread(end_sessions, server.server_api_url, SERVER_KEY, IDENTITY, "disconnected")
            assert (await stream.next_event(10))["data"]["reason"] == "sessionMoved"
            await until(stream, State.RECONNECTING, since=mark)
            await stream.wait_open(10)
            after = await asyncio.to_thread(publish, "presence", {"status": "away"})
            assert (await stream.next_event(10))["eventId"] == after
            assert stream.error is None
            await stream.close()

    asyncio.run(scenario())


def test_setup_refused_for_good_closes_the_stream_with_the_error(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens
) -> None:
    """An identity the user does not own (in a provisioned directory): the stream closes, carrying the typed 404."""
    owner("alice")

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("mallory")) as client:
            stream = await connect(client, IDENTITY, policy=QUICK)
            async with asyncio.timeout(20):
                assert await stream.wait_closed() != ""
            assert isinstance(stream.error, NotFound)
            assert stream.error.status == 404
            assert stream.error.message

    asyncio.run(scenario())


@pytest.mark.parametrize("transport", ["websocket", "sse", "auto"])
def test_a_last_event_id_vora_would_refuse_restarts_from_the_live_stream_with_a_gap(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """A lastEventId VORA refuses (400: a part over 2^64-1) is dropped before any attempt, a local resumeGap says so.

    The position is never sent, so no attempt is refused: auto stays on the WebSocket with nothing counted toward
    the fallback, and the first connection opens live.
    """
    owner("alice")
    refused = "18446744073709551616-0"  # the pattern's 20 digits, one more than the largest stream id part

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(
                client, IDENTITY, subscribe_all=True, last_event_id=refused, policy=QUICK, transport=transport
            )
            try:
                gap = await stream.next_event(10)
                assert gap["type"] == "resumeGap"
                await stream.wait_open(10)
                assert [c.current for c in stream.changes] == [State.CONNECTING, State.OPEN]
                assert {c.transport for c in stream.changes} == {"sse" if transport == "sse" else "websocket"}
                assert gap["data"] == {
                    "reason": "invalidLastEventId",
                    "requestedEventId": refused,
                    "oldestEventId": None,
                    "local": True,
                }
                live = await asyncio.to_thread(publish, "presence", {"status": "busy"})
                assert (await stream.next_event(10))["eventId"] == live
                assert stream.last_event_id == live
            finally:
                await stream.close()  # a failed check must not leave the stream reading while the loop closes

    asyncio.run(scenario())


class GarbledServer(WrappedServer):
    """The real transport, with frames that are no event envelope passed on after each real channelOpened.

    VORA sends only JSON envelopes: a proxy or a broken middlebox might send such frames.
    """

    FRAMES = ("not json at all", "[1, 2, 3]", '"a JSON string"', "null", '{"type": "presence", "data": 7}')

    def frames(self, text: str) -> list[str]:
        """Return the frame, followed by FRAMES if it is a channelOpened."""
        if json.loads(text)["type"] == "channelOpened":
            return [text, *self.FRAMES]
        return [text]


@TRANSPORTS
def test_a_frame_that_is_no_envelope_is_reported_and_the_stream_reads_on(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """Frames that are no JSON envelope go to on_error, one MalformedFrame each; the connection stays and reads on."""
    owner("alice")
    inner = real_transport(server, transport)
    errors: list[BaseException] = []

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await EventStream(
                client,
                IDENTITY,
                events=["presence"],
                policy=QUICK,
                transport=GarbledServer(inner),
                on_error=errors.append,
            ).start()
            try:
                await stream.wait_open(10)
                published = await asyncio.to_thread(publish, "presence", {"status": "busy"})
                assert (await stream.next_event(10))["eventId"] == published
                assert [c.current for c in stream.changes] == [State.CONNECTING, State.OPEN]
                assert stream.error is None
            finally:
                await stream.close()  # a failed check must not leave the stream reading while the loop closes

    asyncio.run(scenario())
    assert [type(error) for error in errors] == [MalformedFrame] * len(GarbledServer.FRAMES)
    assert [error.frame for error in errors if isinstance(error, MalformedFrame)] == list(GarbledServer.FRAMES)


@TRANSPORTS
def test_an_app_that_leaves_asyncio_run_with_its_stream_open_exits_promptly(
    server: RunningServer, owner: Callable[..., None], make_token: TokenFactory, transport: TransportChoice
) -> None:
    """Leaving asyncio.run with the stream reading ends the stream's tasks and closes its connection: the app exits."""
    owner("alice")
    env = {**os.environ, "VORA_BASE_URL": server.base_url, "VORA_ACCESS_TOKEN": make_token("alice")}
    command = [sys.executable, "-W", "always::ResourceWarning", "-m", "tests.harness.sdk_abandon", transport]
    try:
        result = subprocess.run(
            [*command, str(ABANDON_ROUNDS)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=ABANDON_LIMIT,
            check=False,
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"asyncio.run did not return within {ABANDON_LIMIT} s; printed {hung.stdout!r}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"round {n}: asyncio.run returned, the stream left open" for n in range(ABANDON_ROUNDS)
    ]
    assert "unclosed" not in result.stderr  # the cancelled stream closed its connection; none was left to the GC


@TRANSPORTS
def test_close_from_the_state_callback_while_connecting_opens_nothing(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, transport: TransportChoice
) -> None:
    """An app closing the stream from on_state as it starts connecting ends it there: no session, no connection."""
    owner("alice")

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            holder: list[EventStream] = []

            async def on_state(change: StateChange) -> None:
                if change.current is State.CONNECTING:
                    await holder[0].close()

            stream = EventStream(client, IDENTITY, policy=QUICK, transport=transport, on_state=on_state)
            holder.append(stream)
            await stream.start()
            async with asyncio.timeout(10):
                assert await stream.wait_closed() == "closed by the app"
            assert [c.current for c in stream.changes] == [State.CONNECTING, State.CLOSED]
            assert await asyncio.to_thread(list_sessions, server.server_api_url, SERVER_KEY, IDENTITY) == []

    asyncio.run(scenario())


@TRANSPORTS
def test_close_of_an_open_stream_goes_straight_to_closed(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, transport: TransportChoice
) -> None:
    """close() on an open stream ends it with one transition, open to closed, never through reconnecting."""
    owner("alice")

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            for _ in range(5):
                stream = await connect(client, IDENTITY, policy=QUICK, transport=transport)
                await stream.wait_open(10)
                await stream.close()
                assert [c.current for c in stream.changes] == [State.CONNECTING, State.OPEN, State.CLOSED]

    asyncio.run(scenario())


@TRANSPORTS
def test_the_dead_connection_clock_follows_the_announced_heartbeat_interval(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, transport: TransportChoice
) -> None:
    """With no heartbeat_timeout given, a server heartbeating every 1 s makes 7 s of silence (2 x 1 + 5) a dead link."""
    owner("alice")

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(client, IDENTITY, policy=QUICK, transport=transport)
            await stream.wait_open(10)
            workers = server.worker_pids()
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)
            try:
                await until(stream, State.RECONNECTING, timeout=20)  # the fixed 75 s before
            finally:
                for pid in workers:
                    os.kill(pid, signal.SIGCONT)
            change = next(c for c in stream.changes if c.current is State.RECONNECTING)
            assert change.code == 1006
            await stream.close()

    asyncio.run(scenario())


@TRANSPORTS
def test_a_wall_clock_past_the_deadline_marks_a_silent_connection_dead_without_waiting_for_the_loops_clock(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, publish: Publish, transport: TransportChoice
) -> None:
    """A silent link is dead at once when the wall clock jumps past the deadline (a suspend); a live one is kept.

    No test can suspend the machine (SIGSTOP stops no clock), so the policy's wall_clock seam stands for it: the
    wall clock jumps while the loop's monotonic clock, which a suspend would have stopped, goes on as before.
    """
    owner("alice")
    skew = [0.0]
    policy = ReconnectPolicy(
        crowd_window=0.3,
        alone_window=0.1,
        backoff_cap=1.0,
        rng=random.Random(1),
        wake_check=0.2,
        wall_clock=lambda: time.time() + skew[0],
    )

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            # The loop's deadline is 60 s: only the wall clock can find the link dead within this test's bounds.
            stream = await connect(client, IDENTITY, policy=policy, heartbeat_timeout=60.0, transport=transport)
            await stream.wait_open(10)
            first = await asyncio.to_thread(publish, "presence", {"status": "busy"})
            assert (await stream.next_event(10))["eventId"] == first
            skew[0] = 59.0  # within the deadline, and heartbeats (one a second) keep coming: nothing happens
            second = await asyncio.to_thread(publish, "presence", {"status": "away"})
            assert (await stream.next_event(10))["eventId"] == second
            assert stream.state is State.OPEN
            assert not any(change.current is State.RECONNECTING for change in stream.changes)
            workers = server.worker_pids()
            mark = len(stream.changes)
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)  # the link goes silent, as with a NAT entry gone during the sleep
            try:
                paused_at = time.monotonic()
                skew[0] += 61.0  # the sleep, by the wall clock
                await until(stream, State.RECONNECTING, timeout=10, since=mark)
                noticed = time.monotonic() - paused_at
            finally:
                for pid in workers:
                    os.kill(pid, signal.SIGCONT)
            assert noticed < 5.0, noticed
            change = next(c for c in stream.changes[mark:] if c.current is State.RECONNECTING)
            assert change.code == 1006
            await until(stream, State.OPEN, timeout=30, since=mark)
            third = await asyncio.to_thread(publish, "presence", {"status": "available"})
            assert (await stream.next_event(10))["eventId"] == third  # nothing twice, nothing lost
            await stream.close()

    asyncio.run(scenario())


def test_a_state_callback_that_raises_ends_the_stream_and_its_readers(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens
) -> None:
    """An on_state that raises closes the stream with its error, and the readers' iteration still ends."""
    owner("alice")

    def broken(change: StateChange) -> None:
        raise RuntimeError(f"the app's view of {change.current.value} is gone")

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice")) as client:
            stream = await connect(client, IDENTITY, policy=QUICK, on_state=broken)
            async with asyncio.timeout(10):
                assert [envelope async for envelope in stream] == []
                assert (await stream.wait_closed()).startswith("failed: RuntimeError")
            assert isinstance(stream.error, RuntimeError)
            assert stream.state is State.CLOSED

    asyncio.run(scenario())
