"""The SDK's choice of transport behind a real proxy that blocks WebSocket upgrades: auto falls back to SSE."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from vora_client import (
    AutoTransport,
    BadRequest,
    Connection,
    EventStream,
    EventStreamTransport,
    Fallback,
    ReconnectPolicy,
    Session,
    State,
    StreamClosed,
    Transport,
    Unauthorized,
    VoraClient,
    WebSocketTransport,
    connect,
)

from testbed.vora_server import LIVE_TIMEOUT, RunningServer, is_live
from testbed.wait import wait_for
from tests.harness.nginx import Nginx, WebSocketPolicy, nginx_or_skip
from tests.harness.sdk import IDENTITY, SERVER_KEY, ServerFactory, until
from tests.harness.server_api import end_sessions, list_sessions

pytestmark = [pytest.mark.slow, pytest.mark.ws, pytest.mark.topology]

QUICK = ReconnectPolicy(crowd_window=0.3, alone_window=0.1, backoff_cap=1.0)
Publish = Callable[..., str]
Tokens = Callable[..., Callable[[], Any]]
ProxyFactory = Callable[[WebSocketPolicy], Nginx]


@pytest.fixture
def proxy(server: RunningServer) -> Iterator[ProxyFactory]:
    """Start nginx in front of the module's server, passing, refusing or stripping WebSocket upgrades."""
    binary = nginx_or_skip()
    started: list[Nginx] = []

    def start(websocket: WebSocketPolicy) -> Nginx:
        nginx = Nginx([server.port], binary=binary, websocket=websocket).start()
        started.append(nginx)
        return nginx

    yield start
    for nginx in started:
        nginx.close()


def requests_to(nginx: Nginx, path: str) -> int:
    """Count the requests nginx finished for one path."""
    return sum(1 for line in nginx.access_log_lines() if f" {path} HTTP/" in line)


def logged(nginx: Nginx, path: str, count: int) -> None:
    """Wait until nginx has logged count requests for path (a stream is logged once nginx sees it end)."""
    wait_for(lambda: requests_to(nginx, path) >= count, 10, what=f"{count} requests to {path} in nginx's log")
    assert requests_to(nginx, path) == count


@pytest.mark.parametrize("blocking", ["refuse", "strip"])
def test_auto_falls_back_to_sse_where_the_proxy_blocks_the_upgrade_and_stays_there(
    server: RunningServer,
    proxy: ProxyFactory,
    owner: Callable[..., None],
    tokens: Tokens,
    publish: Publish,
    blocking: WebSocketPolicy,
) -> None:
    """A proxy's own 403, or an upgrade stripped into VORA's 400, twice: auto probes SSE, stays there, gets events."""
    owner("alice")
    nginx = proxy(blocking)

    async def scenario() -> None:
        fallbacks: list[Fallback] = []
        async with VoraClient(f"{nginx.url}/vora", tokens("alice")) as client:
            stream = await connect(client, IDENTITY, subscribe_all=True, policy=QUICK, on_fallback=fallbacks.append)
            await until(stream, State.OPEN)
            opened = stream.changes[-1]
            assert (opened.transport, opened.reason) == ("sse", "fell back to sse")
            assert fallbacks == [Fallback(from_="websocket", to="sse", failures=3)]
            # One failed upgrade may be noise: the first attempt backed off and tried the WebSocket again; the
            # second probed SSE, which opened, then tried the WebSocket once more, which failed again.
            assert [c.current for c in stream.changes] == [
                State.CONNECTING,
                State.RECONNECTING,
                State.CONNECTING,
                State.OPEN,
            ]
            first = await asyncio.to_thread(publish, "callRinging", {"callId": "c-1"})
            assert (await stream.next_event(10))["eventId"] == first
            # A new session after the old one ended: still SSE, set up as ServerSentEvents, no upgrade tried.
            mark = len(stream.changes)  # before the cause: the stream may pass reconnecting before until() runs
            await asyncio.to_thread(end_sessions, server.server_api_url, SERVER_KEY, IDENTITY, "disconnected")
            assert (await stream.next_event(10))["data"]["reason"] == "disconnected"
            await until(stream, State.RECONNECTING, since=mark)
            await until(stream, State.OPEN)
            [session] = await asyncio.to_thread(list_sessions, server.server_api_url, SERVER_KEY, IDENTITY)
            assert session["connectionType"] == "ServerSentEvents"
            second = await asyncio.to_thread(publish, "callEnded", {"callId": "c-1"})
            assert (await stream.next_event(10))["eventId"] == second
            assert [c.transport for c in stream.changes if c.current is State.OPEN] == ["sse", "sse"]
            assert len(fallbacks) == 1
            await stream.close()

    asyncio.run(scenario())
    logged(nginx, "/vora/ws", 3)
    logged(nginx, "/vora/sse", 3)  # the probe, the stream it fell back to, and the stream after the new setup


def test_forced_websocket_behind_a_refusing_proxy_keeps_trying_and_never_opens(
    server: RunningServer, proxy: ProxyFactory, owner: Callable[..., None], tokens: Tokens
) -> None:
    """Forced to WebSocket, the proxy's 403 (not VORA's) is a failed connect: backoff and retry, never SSE."""
    owner("alice")
    nginx = proxy("refuse")

    async def scenario() -> None:
        async with VoraClient(f"{nginx.url}/vora", tokens("alice")) as client:
            stream = await connect(client, IDENTITY, policy=QUICK, transport="websocket")
            async with asyncio.timeout(20):
                while sum(c.current is State.RECONNECTING for c in stream.changes) < 3:
                    await asyncio.sleep(0.02)
            refusals = [c for c in stream.changes if c.current is State.RECONNECTING]
            assert {(c.code, c.transport) for c in refusals} == {(403, "websocket")}
            assert all("without VORA's error shape" in c.reason for c in refusals)
            assert State.OPEN not in {c.current for c in stream.changes}
            await stream.close()

    asyncio.run(scenario())
    assert requests_to(nginx, "/vora/sse") == 0


def test_forced_websocket_behind_a_stripping_proxy_closes_with_vora_400(
    server: RunningServer, proxy: ProxyFactory, owner: Callable[..., None], tokens: Tokens
) -> None:
    """Forced to WebSocket where the Upgrade is stripped: VORA's 400 closes the stream, carrying the typed error."""
    owner("alice")
    nginx = proxy("strip")

    async def scenario() -> None:
        async with VoraClient(f"{nginx.url}/vora", tokens("alice")) as client:
            stream = await connect(client, IDENTITY, policy=QUICK, transport="websocket")
            async with asyncio.timeout(20):
                assert (await stream.wait_closed()).startswith("refused: 400")
            assert isinstance(stream.error, BadRequest)
            assert "WebSocket" in stream.error.message

    asyncio.run(scenario())
    assert requests_to(nginx, "/vora/sse") == 0


def test_a_400_for_a_stripped_upgrade_keeps_the_streams_position(
    server: RunningServer, proxy: ProxyFactory, owner: Callable[..., None], tokens: Tokens
) -> None:
    """VORA's 400 for a stripped upgrade is no verdict on a sound lastEventId: no gap, the position is kept."""
    owner("alice")
    nginx = proxy("strip")
    position = "1795396666123-0"

    async def scenario() -> None:
        async with VoraClient(f"{nginx.url}/vora", tokens("alice")) as client:
            stream = await connect(client, IDENTITY, policy=QUICK, transport="websocket", last_event_id=position)
            async with asyncio.timeout(20):
                assert (await stream.wait_closed()).startswith("refused: 400")
            assert stream.last_event_id == position
            with pytest.raises(StreamClosed):
                await stream.next_event(1)  # nothing was delivered: no local resumeGap

    asyncio.run(scenario())


def test_a_vora_refusal_of_the_upgrade_is_no_reason_to_fall_back(server: RunningServer, proxy: ProxyFactory) -> None:
    """A token VORA refuses (401 in its error shape) ends the stream on WebSocket; auto never tries SSE."""
    nginx = proxy("pass")

    async def scenario() -> None:
        stream = EventStream(
            None,
            IDENTITY,
            session=Session(IDENTITY, "v1.bm90LWEtdG9rZW4.bm90LWEtc2lnbmF0dXJl"),
            ws_url=f"{nginx.url.replace('http', 'ws')}/vora/ws",
            policy=QUICK,
        )
        await stream.start()
        async with asyncio.timeout(20):
            await stream.wait_closed()
        assert isinstance(stream.error, Unauthorized)
        assert {c.transport for c in stream.changes} == {"websocket"}

    asyncio.run(scenario())
    logged(nginx, "/vora/ws", 1)  # nginx logs a request after its answer is sent: the client may have read it first
    assert requests_to(nginx, "/vora/sse") == 0


def test_forced_sse_through_the_proxy_sets_up_as_server_sent_events(
    server: RunningServer, proxy: ProxyFactory, owner: Callable[..., None], tokens: Tokens, publish: Publish
) -> None:
    """Forced to SSE, the SDK never tries the upgrade, sets up as ServerSentEvents and streams through nginx."""
    owner("alice")
    nginx = proxy("pass")

    async def scenario() -> None:
        async with VoraClient(f"{nginx.url}/vora", tokens("alice")) as client:
            stream = await connect(client, IDENTITY, subscribe_all=True, policy=QUICK, transport="sse")
            await until(stream, State.OPEN)
            [session] = await asyncio.to_thread(list_sessions, server.server_api_url, SERVER_KEY, IDENTITY)
            assert session["connectionType"] == "ServerSentEvents"
            event_id = await asyncio.to_thread(publish, "presence", {"status": "busy"})
            assert (await stream.next_event(10))["eventId"] == event_id
            await stream.close()

    asyncio.run(scenario())
    assert requests_to(nginx, "/vora/ws") == 0
    logged(nginx, "/vora/sse", 1)


class HeldTransport:
    """A real transport whose opens wait while held: VORA then comes back between a failed upgrade and the probe."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self.name = inner.name
        self._gate: asyncio.Event | None = None
        self.waiting = 0

    def hold(self) -> None:
        """Make the next opens wait until release()."""
        self._gate = asyncio.Event()

    def release(self) -> None:
        """Let waiting and later opens through."""
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    async def open(self, token: str, last_event_id: str | None, timeout: float) -> Connection:
        """Open the real transport, once released if held."""
        if self._gate is not None:
            self.waiting += 1
            await self._gate.wait()
        return await self._inner.open(token, last_event_id, timeout)


def test_a_server_that_is_down_is_no_reason_to_fall_back(
    make_server: ServerFactory, owner: Callable[..., None], tokens: Tokens
) -> None:
    """VORA killed behind nginx (502 to upgrades): back by the SSE probe or later, the stream stays on WebSocket."""
    owner("alice")
    binary = nginx_or_skip()

    with make_server() as dedicated, Nginx([dedicated.port], binary=binary, websocket="pass") as nginx:

        async def back() -> None:
            await asyncio.to_thread(dedicated.process.start)
            await asyncio.to_thread(wait_for, lambda: is_live(dedicated.port), LIVE_TIMEOUT, what="VORA back")

        async def opened(stream: EventStream, count: int) -> None:
            async with asyncio.timeout(30):
                while sum(c.current is State.OPEN for c in stream.changes) < count:
                    await asyncio.sleep(0.02)

        async def scenario() -> None:
            fallbacks: list[Fallback] = []
            sse = HeldTransport(EventStreamTransport(f"{nginx.url}/vora/sse"))
            auto = AutoTransport(WebSocketTransport(f"{nginx.url.replace('http', 'ws')}/vora/ws"), sse)
            async with VoraClient(f"{nginx.url}/vora", tokens("alice")) as client:
                stream = await connect(client, IDENTITY, policy=QUICK, transport=auto, on_fallback=fallbacks.append)
                await stream.wait_open(20)
                # The race: two upgrades get nginx's 502 while VORA is down, and VORA is back by the SSE probe.
                sse.hold()
                await asyncio.to_thread(dedicated.process.kill)
                async with asyncio.timeout(30):
                    while sse.waiting < 1:
                        await asyncio.sleep(0.02)
                await back()
                sse.release()
                # The probe opens, and the WebSocket tried right after it passes: VORA had been away.
                await opened(stream, 2)
                assert fallbacks == []
                # One SSE request so far: the probe, closed once it opened. Then down for longer: two probes,
                # each after two upgrades that could not pass, and nothing moves.
                await asyncio.to_thread(logged, nginx, "/vora/sse", 1)
                await asyncio.to_thread(dedicated.process.kill)
                await asyncio.to_thread(
                    wait_for, lambda: requests_to(nginx, "/vora/sse") >= 3, 30, what="two more SSE probes"
                )
                assert fallbacks == []
                await back()
                await opened(stream, 3)
                assert [c.transport for c in stream.changes if c.current is State.OPEN] == ["websocket"] * 3
                assert fallbacks == []
                await stream.close()

        asyncio.run(scenario())


def test_a_setup_answered_502_while_vora_restarts_is_retried(
    make_server: ServerFactory, owner: Callable[..., None], tokens: Tokens
) -> None:
    """A setup nginx answers 502 (VORA down behind it) is retried with backoff; the stream opens once VORA is back."""
    owner("alice")
    binary = nginx_or_skip()

    with make_server() as dedicated, Nginx([dedicated.port], binary=binary, websocket="pass") as nginx:

        async def scenario() -> None:
            await asyncio.to_thread(dedicated.process.kill)
            async with VoraClient(f"{nginx.url}/vora", tokens("alice")) as client:
                stream = await connect(client, IDENTITY, policy=QUICK)
                async with asyncio.timeout(20):
                    while not any(c.code == 502 for c in stream.changes) and stream.state is not State.CLOSED:
                        await asyncio.sleep(0.02)
                assert stream.state is not State.CLOSED, stream.close_reason
                await asyncio.to_thread(dedicated.process.start)
                await stream.wait_open(LIVE_TIMEOUT + 10)
                await stream.close()

        asyncio.run(scenario())
