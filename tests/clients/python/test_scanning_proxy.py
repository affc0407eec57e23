"""The SDK's event stream through a real gateway that holds each response's first kilobytes (Privoxy filtering)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from vora_client import ReconnectPolicy, State, VoraClient, connect

from testbed.vora_server import RunningServer
from tests.harness.loopback_daemon import binary_or_skip
from tests.harness.scanning_proxy import STEPPED_BACK, ScanningProxy
from tests.harness.sdk import IDENTITY, ServerFactory

pytestmark = [pytest.mark.slow, pytest.mark.ws, pytest.mark.topology]

QUICK = ReconnectPolicy(crowd_window=0.3, alone_window=0.1, backoff_cap=1.0)
HOLD_KIB = 8  # what the gateway holds before it passes a response on
Tokens = Callable[..., Callable[[], Any]]
Publish = Callable[..., str]


@pytest.fixture
def gateway() -> Iterator[ScanningProxy]:
    """Start Privoxy holding the first 8 KiB of each text/* response; print its log at teardown."""
    with ScanningProxy(binary=binary_or_skip("privoxy"), hold_kib=HOLD_KIB) as proxy:
        yield proxy
        print(f"privoxy on {proxy.port}:\n{proxy.log_tail()}")


def test_padding_past_what_the_gateway_holds_lets_each_event_through_at_once(
    make_server: ServerFactory, gateway: ScanningProxy, owner: Callable[..., None], tokens: Tokens, publish: Publish
) -> None:
    """With VORA_SSE_PADDING above the gateway's hold, the stream opens at once and each event passes in under 1 s."""
    owner("alice")
    with make_server(sse_padding=str((HOLD_KIB + 2) * 1024)) as server:

        async def scenario() -> None:
            async with VoraClient(server.base_url, tokens("alice"), proxy=gateway.url) as client:
                stream = await connect(client, IDENTITY, events=["callRinging"], policy=QUICK, transport="sse")
                await stream.wait_open(5)
                for n in range(3):
                    sent = time.monotonic()
                    event_id = await asyncio.to_thread(publish, "callRinging", {"callId": f"g-{n}"}, on=server)
                    assert (await stream.next_event(5))["eventId"] == event_id
                    assert time.monotonic() - sent < 1.0
                assert [c.current for c in stream.changes] == [State.CONNECTING, State.OPEN]
                await stream.close()

        asyncio.run(scenario())
    assert any(STEPPED_BACK in line for line in gateway.log_lines()), gateway.log_tail()


def test_without_padding_the_gateway_holds_the_head_and_the_open_timeout_retries(
    server: RunningServer, gateway: ScanningProxy, owner: Callable[..., None], tokens: Tokens
) -> None:
    """Without padding the head never passes the gateway: each open times out and the stream tries again, never open."""
    owner("alice")

    async def scenario() -> None:
        async with VoraClient(server.base_url, tokens("alice"), proxy=gateway.url) as client:
            stream = await connect(client, IDENTITY, policy=QUICK, transport="sse", open_timeout=1.0)
            with pytest.raises(TimeoutError):
                await stream.wait_open(4)
            retries = [c for c in stream.changes if c.current is State.RECONNECTING]
            assert len(retries) >= 2, stream.changes
            assert State.OPEN not in [c.current for c in stream.changes]
            await stream.close()

    asyncio.run(scenario())
    assert not any(STEPPED_BACK in line for line in gateway.log_lines()), gateway.log_tail()
