"""The Python SDK behind a real forward proxy (tinyproxy): environment, proxy option, credentials, 407, NO_PROXY."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vora_client import (
    ConnectionFailed,
    EventStream,
    ProxyAuthenticationRequired,
    ReconnectPolicy,
    State,
    TransportChoice,
    Unauthorized,
    VoraClient,
    connect,
)

from testbed.ports import free_port
from testbed.vora_server import RunningServer
from tests.harness.forward_proxy import ForwardProxy
from tests.harness.loopback_daemon import binary_or_skip
from tests.harness.nginx import Nginx, nginx_or_skip
from tests.harness.sdk import IDENTITY
from tests.harness.tls import self_signed

pytestmark = [pytest.mark.slow, pytest.mark.ws, pytest.mark.topology]

QUICK = ReconnectPolicy(crowd_window=0.3, alone_window=0.1, backoff_cap=0.5)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "WS_PROXY", "WSS_PROXY", "SOCKS_PROXY")
Tokens = Callable[..., Callable[[], Any]]
ProxyFactory = Callable[..., ForwardProxy]


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test with no proxy variable set (the machine's own, if any, would decide the path otherwise)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def forward_proxy() -> Iterator[ProxyFactory]:
    """Start tinyproxy instances on loopback; print their logs at teardown (pytest shows them when a test fails)."""
    binary = binary_or_skip("tinyproxy")
    started: list[ForwardProxy] = []

    def start(**options: Any) -> ForwardProxy:
        proxy = ForwardProxy(binary=binary, **options).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        print(f"tinyproxy on {proxy.port}:\n{proxy.log_tail()}")
        proxy.close()


@pytest.fixture
def https_vora(server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Serve the module's VORA on https:// (nginx terminating TLS, a self-signed certificate both libraries trust)."""
    binary = nginx_or_skip()
    certificate = self_signed(tmp_path / "tls")
    # httpx (trust_env) and websockets (OpenSSL's default paths) both read SSL_CERT_FILE, as they do for the CA of a
    # proxy that inspects TLS.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert_path))
    with Nginx([server.port], binary=binary, tls=(certificate.cert_path, certificate.key_path)) as nginx:
        yield f"{nginx.url}/vora"


def closed_port_url() -> str:
    """Return the URL of a proxy that is down: a loopback port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


async def reconnecting_times(stream: EventStream, count: int, timeout: float = 20.0) -> None:
    """Wait until the stream has gone to reconnecting count times."""
    async with asyncio.timeout(timeout):
        while sum(c.current is State.RECONNECTING for c in stream.changes) < count:
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("variable", "transport"), [("HTTP_PROXY", "auto"), ("HTTP_PROXY", "sse"), ("ALL_PROXY", "auto")]
)
def test_the_proxy_environment_carries_setup_subscription_and_the_stream(
    server: RunningServer,
    forward_proxy: ProxyFactory,
    owner: Callable[..., None],
    tokens: Tokens,
    publish: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    transport: TransportChoice,
) -> None:
    """HTTP_PROXY or ALL_PROXY: REST and SSE forwarded, the WebSocket tunnelled (CONNECT); loopback not exempt."""
    owner("alice")
    proxy = forward_proxy()

    async def scenario() -> None:
        with monkeypatch.context() as env:  # read when the client and the stream are made
            env.setenv(variable, proxy.url)
            client = VoraClient(server.base_url, tokens("alice"))
            stream = await connect(client, IDENTITY, events=["callRinging"], policy=QUICK, transport=transport)
        async with client:
            assert await client.identities() == [IDENTITY]
            await stream.wait_open(20)
            # auto stays on the WebSocket: CONNECT to VORA's port passes, so nothing falls back.
            assert stream.changes[-1].transport == ("websocket" if transport == "auto" else "sse")
            event_id = await asyncio.to_thread(publish, "callRinging", {"callId": "p-1"})
            assert (await stream.next_event(10))["eventId"] == event_id
            await stream.close()
        rest = f"http://127.0.0.1:{server.port}/vora"
        assert proxy.forwards(f"{rest}/identity") >= 2, proxy.log_tail()  # identities and setup
        assert proxy.forwards(f"{rest}/identity/{IDENTITY}/eventSubscription") == 1, proxy.log_tail()
        if transport == "auto":
            assert proxy.tunnels_to(server.port) == 1, proxy.log_tail()
            assert proxy.forwards(f"{rest}/sse") == 0
        else:
            assert proxy.forwards(f"{rest}/sse") == 1, proxy.log_tail()
            assert proxy.tunnels_to(server.port) == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_the_proxy_option_with_credentials_wins_over_the_environment(
    server: RunningServer,
    forward_proxy: ProxyFactory,
    owner: Callable[..., None],
    tokens: Tokens,
    publish: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    transport: TransportChoice,
) -> None:
    """proxy="http://user:password@host:port" sends REST, WebSocket and SSE through a Basic-auth proxy, env ignored."""
    owner("alice")
    proxy = forward_proxy(credentials=("vora", "s3cret-Pass"))

    async def scenario() -> None:
        with monkeypatch.context() as env:
            env.setenv("HTTP_PROXY", closed_port_url())  # a down proxy: any request that took it would fail
            env.setenv("NO_PROXY", "127.0.0.1")  # ignored too: the option names the proxy for every URL
            client = VoraClient(server.base_url, tokens("alice"), proxy=proxy.url_with_credentials)
            stream = await connect(client, IDENTITY, events=["callRinging"], policy=QUICK, transport=transport)
            await stream.wait_open(20)  # opened while the variables are set: httpx would read them as it opens
        async with client:
            event_id = await asyncio.to_thread(publish, "callRinging", {"callId": "p-2"})
            assert (await stream.next_event(10))["eventId"] == event_id
            await stream.close()
        assert proxy.forwards(f"http://127.0.0.1:{server.port}/vora/identity/setup") == 1, proxy.log_tail()
        tunnelled = proxy.tunnels_to(server.port) + proxy.forwards(f"http://127.0.0.1:{server.port}/vora/sse")
        assert tunnelled == 1, proxy.log_tail()

    asyncio.run(scenario())


def test_https_proxy_alone_leaves_plain_http_vora_direct_on_every_transport(
    server: RunningServer,
    forward_proxy: ProxyFactory,
    owner: Callable[..., None],
    tokens: Tokens,
    publish: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY is for https:// and wss:// only: REST and the ws:// socket both go direct (websockets took it)."""
    owner("alice")
    proxy = forward_proxy()

    async def scenario() -> None:
        with monkeypatch.context() as env:
            env.setenv("HTTPS_PROXY", proxy.url)
            client = VoraClient(server.base_url, tokens("alice"))
            stream = await connect(client, IDENTITY, events=["callRinging"], policy=QUICK, transport="websocket")
            await stream.wait_open(20)
        async with client:
            event_id = await asyncio.to_thread(publish, "callRinging", {"callId": "p-6"})
            assert (await stream.next_event(10))["eventId"] == event_id
            await stream.close()
        assert proxy.requests() == [], proxy.log_tail()

    asyncio.run(scenario())


def test_proxy_none_ignores_the_environment(
    server: RunningServer,
    owner: Callable[..., None],
    tokens: Tokens,
    publish: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """proxy=None goes direct on every transport although HTTP_PROXY names a proxy that is down, on a stream too."""
    owner("alice")

    async def scenario() -> None:
        with monkeypatch.context() as env:
            env.setenv("HTTP_PROXY", closed_port_url())
            env.setenv("HTTPS_PROXY", closed_port_url())  # websockets on its own prefers it even for ws://
            client = VoraClient(server.base_url, tokens("alice"), proxy=None)
            stream = await connect(client, IDENTITY, events=["callRinging"], policy=QUICK)
            sse = await connect(client, IDENTITY, events=["callRinging"], policy=QUICK, transport="sse")
            await stream.wait_open(20)
            await sse.wait_open(20)  # opened while the variables were still set: httpx reads them as it opens
            # A client that takes the down proxy from the environment; its stream says proxy=None for itself.
            proxied = VoraClient(server.base_url, tokens("alice"))
            session = await client.setup(IDENTITY)
            own = await connect(proxied, IDENTITY, session=session, policy=QUICK, transport="sse", proxy=None)
            await own.wait_open(20)
        async with client, proxied:
            event_id = await asyncio.to_thread(publish, "callRinging", {"callId": "p-3"})
            assert (await stream.next_event(10))["eventId"] == event_id
            assert (await sse.next_event(10))["eventId"] == event_id
            assert (await own.next_event(10))["eventId"] == event_id
            assert {c.transport for c in stream.changes} == {"websocket"}
            await stream.close()
            await sse.close()
            await own.close()

    asyncio.run(scenario())


def test_no_proxy_sends_every_transport_direct(
    server: RunningServer,
    forward_proxy: ProxyFactory,
    owner: Callable[..., None],
    tokens: Tokens,
    publish: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NO_PROXY=127.0.0.1 keeps REST, the WebSocket and SSE off the proxy, for httpx and websockets alike."""
    owner("alice")
    proxy = forward_proxy()

    async def scenario() -> None:
        with monkeypatch.context() as env:
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):  # each library's favourite, all set
                env.setenv(name, proxy.url)
            env.setenv("NO_PROXY", f"localhost,127.0.0.1:{server.port}")
            client = VoraClient(server.base_url, tokens("alice"))
            ws = await connect(client, IDENTITY, events=["callRinging"], policy=QUICK, transport="websocket")
            sse = await connect(client, IDENTITY, events=["callRinging"], policy=QUICK, transport="sse")
            await ws.wait_open(20)
            await sse.wait_open(20)
        async with client:
            event_id = await asyncio.to_thread(publish, "callRinging", {"callId": "p-4"})
            assert (await ws.next_event(10))["eventId"] == event_id
            assert (await sse.next_event(10))["eventId"] == event_id
            await ws.close()
            await sse.close()
        assert proxy.requests() == [], proxy.log_tail()

    asyncio.run(scenario())


@pytest.mark.parametrize("transport", ["auto", "websocket", "sse"])
def test_a_proxy_that_is_down_is_a_failed_connect_with_backoff(
    server: RunningServer, owner: Callable[..., None], tokens: Tokens, transport: TransportChoice
) -> None:
    """A proxy that refuses connections: setup and the stream's opens fail and are retried, the stream never closes."""
    owner("alice")
    calls = 0
    mint = tokens("alice")

    async def counted() -> str:
        nonlocal calls
        calls += 1
        token: str = await mint()
        return token

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice"), proxy=None) as direct:
            session = await direct.setup(IDENTITY)
        async with VoraClient(server.base_url, counted, proxy=closed_port_url()) as client:
            with pytest.raises(ConnectionFailed):
                await client.identities()
            # Given a session, the stream's own opens go through the proxy too: each fails and is retried.
            stream = await connect(client, IDENTITY, session=session, policy=QUICK, transport=transport)
            await reconnecting_times(stream, 3)
            assert State.OPEN not in {c.current for c in stream.changes}
            assert stream.state is not State.CLOSED
            assert all(c.code is None for c in stream.changes if c.current is State.RECONNECTING)
            assert {c.transport for c in stream.changes} == {"sse" if transport == "sse" else "websocket"}
            await stream.close()
        assert calls == 1  # the identities call; the stream's session needed no setup, so no token was asked

    asyncio.run(scenario())


def test_a_proxy_answering_407_to_rest_is_no_vora_401(
    server: RunningServer, forward_proxy: ProxyFactory, owner: Callable[..., None], tokens: Tokens
) -> None:
    """A REST call through a proxy wanting credentials raises ProxyAuthenticationRequired; no token refresh."""
    owner("alice")
    proxy = forward_proxy(credentials=("vora", "s3cret-Pass"))
    asked: list[bool] = []
    mint = tokens("alice")

    async def provider(*, refresh: bool = False) -> str:
        asked.append(refresh)
        token: str = await mint()
        return token

    async def scenario() -> None:
        async with VoraClient(server.base_url, provider, proxy=proxy.url) as client:
            with pytest.raises(ProxyAuthenticationRequired) as caught:
                await client.identities()
        assert not isinstance(caught.value, Unauthorized)
        assert caught.value.status == 407
        assert (caught.value.proxy_authenticate or "").startswith("Basic")
        assert asked == [False]

    asyncio.run(scenario())
    assert proxy.forwards(f"http://127.0.0.1:{server.port}/vora/identity") == 1, proxy.log_tail()


@pytest.mark.parametrize("transport", ["auto", "websocket", "sse"])
def test_a_proxy_answering_407_to_the_stream_is_a_failed_connect_told_to_on_error(
    server: RunningServer,
    forward_proxy: ProxyFactory,
    owner: Callable[..., None],
    tokens: Tokens,
    transport: TransportChoice,
) -> None:
    """407 to the WebSocket's CONNECT or SSE's GET: retried with backoff, reported, never `unauthorized` or a setup."""
    owner("alice")
    proxy = forward_proxy(credentials=("vora", "s3cret-Pass"))
    calls = 0
    mint = tokens("alice")

    async def counted() -> str:
        nonlocal calls
        calls += 1
        token: str = await mint()
        return token

    async def scenario() -> None:
        errors: list[Exception] = []
        async with VoraClient(server.base_url, tokens("alice"), proxy=None) as direct:
            session = await direct.setup(IDENTITY)
        async with VoraClient(server.base_url, counted, proxy=proxy.url) as client:
            stream = await connect(
                client, IDENTITY, session=session, policy=QUICK, transport=transport, on_error=errors.append
            )
            await reconnecting_times(stream, 3)
            refusals = [c for c in stream.changes if c.current is State.RECONNECTING]
            assert {c.code for c in refusals} == {407}
            assert stream.state is not State.CLOSED
            assert State.OPEN not in {c.current for c in stream.changes}
            assert len(errors) >= 3
            assert all(isinstance(e, ProxyAuthenticationRequired) for e in errors)
            # auto probed SSE, which the proxy refused the same way: no fallback.
            assert {c.transport for c in stream.changes} == {"sse" if transport == "sse" else "websocket"}
            await stream.close()
        assert calls == 0  # no setup again, no token asked: the proxy's 407 says nothing about VORA's session

    asyncio.run(scenario())
    refused = proxy.tunnels_to(server.port) + proxy.forwards(f"http://127.0.0.1:{server.port}/vora/sse")
    assert refused >= 3, proxy.log_tail()


def test_auto_falls_back_to_sse_behind_a_proxy_that_tunnels_only_to_443(
    server: RunningServer,
    forward_proxy: ProxyFactory,
    owner: Callable[..., None],
    tokens: Tokens,
    publish: Callable[..., str],
) -> None:
    """CONNECT allowed to 443 only (squid's default): ws:// cannot pass, the forwarded SSE can, auto moves to SSE."""
    owner("alice")
    proxy = forward_proxy(connect_ports=(443,))

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice"), proxy=proxy.url) as client:
            stream = await connect(client, IDENTITY, events=["callRinging"], policy=QUICK)
            await stream.wait_open(30)
            assert (stream.changes[-1].transport, stream.changes[-1].reason) == ("sse", "fell back to sse")
            event_id = await asyncio.to_thread(publish, "callRinging", {"callId": "p-5"})
            assert (await stream.next_event(10))["eventId"] == event_id
            await stream.close()

    asyncio.run(scenario())
    assert proxy.tunnels_to(server.port) == 3, proxy.log_tail()  # a retry, then the confirming retry after the probe
    assert proxy.forwards(f"http://127.0.0.1:{server.port}/vora/sse") == 2, proxy.log_tail()


def test_an_https_vora_is_reached_through_connect_tunnels_only(
    https_vora: str,
    forward_proxy: ProxyFactory,
    owner: Callable[..., None],
    tokens: Tokens,
    publish: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY and an https:// VORA: REST, the wss:// socket and SSE all ride CONNECT tunnels to VORA's port."""
    owner("alice")
    proxy = forward_proxy()
    port = int(https_vora.rsplit(":", 1)[1].split("/")[0])

    async def scenario() -> None:
        with monkeypatch.context() as env:
            env.setenv("HTTPS_PROXY", proxy.url)
            client = VoraClient(https_vora, tokens("alice"))
            ws = await connect(client, IDENTITY, events=["callRinging"], policy=QUICK)
            sse = await connect(client, IDENTITY, events=["callRinging"], policy=QUICK, transport="sse")
        async with client:
            await ws.wait_open(20)
            await sse.wait_open(20)
            assert ws.changes[-1].transport == "websocket"
            event_id = await asyncio.to_thread(publish, "callRinging", {"callId": "p-7"})
            assert (await ws.next_event(10))["eventId"] == event_id
            assert (await sse.next_event(10))["eventId"] == event_id
            await ws.close()
            await sse.close()

    asyncio.run(scenario())
    requests = proxy.requests()
    assert set(requests) == {("CONNECT", f"127.0.0.1:{port}")}, proxy.log_tail()
    assert len(requests) >= 3, proxy.log_tail()  # REST (kept alive), the socket, the event stream


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_a_407_to_connect_for_an_https_vora_is_proxy_authentication_required(
    https_vora: str,
    forward_proxy: ProxyFactory,
    owner: Callable[..., None],
    tokens: Tokens,
    transport: TransportChoice,
) -> None:
    """A CONNECT refused with 407 (httpx's ProxyError, websockets' InvalidProxyStatus): one typed error, retried."""
    owner("alice")
    proxy = forward_proxy(credentials=("vora", "s3cret-Pass"))

    async def scenario() -> None:
        errors: list[Exception] = []
        async with VoraClient(https_vora, tokens("alice"), proxy=None) as direct:
            session = await direct.setup(IDENTITY)
        async with VoraClient(https_vora, tokens("alice"), proxy=proxy.url) as client:
            with pytest.raises(ProxyAuthenticationRequired):
                await client.identities()
            stream = await connect(
                client, IDENTITY, session=session, policy=QUICK, transport=transport, on_error=errors.append
            )
            await reconnecting_times(stream, 2)
            assert {c.code for c in stream.changes if c.current is State.RECONNECTING} == {407}
            assert errors
            assert all(isinstance(e, ProxyAuthenticationRequired) for e in errors)
            assert stream.state is not State.CLOSED
            await stream.close()

    asyncio.run(scenario())
    assert {method for method, _ in proxy.requests()} == {"CONNECT"}, proxy.log_tail()
