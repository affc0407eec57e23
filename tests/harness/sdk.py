"""VORA servers for the Python SDK's tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from vora_client import EventStream, EventStreamTransport, State, Transport, TransportChoice, WebSocketTransport

from testbed.vora_server import RunningServer

IDENTITY = "910111000"


SERVER_KEY = "sdk-test-server-key-0123456789abcdefghijklmnop"


ServerFactory = Callable[..., contextlib.AbstractContextManager[RunningServer]]


def real_transport(server: RunningServer, transport: TransportChoice) -> Transport:
    """Return the SDK's own transport of the chosen kind to the server, for a test to wrap."""
    if transport == "websocket":
        return WebSocketTransport(server.ws_url)
    return EventStreamTransport(f"{server.base_url}/sse")


async def until(stream: EventStream, state: State, timeout: float = 20.0, since: int | None = None) -> None:
    """Wait until the stream is in a state or has passed through it since the call, or since changes[since:]."""
    # A loaded machine may run the stream past a short state (reconnecting with a wait of a few ms) before this
    # call: a test that caused the change counts the changes before causing it and passes that count as since.
    seen = len(stream.changes) if since is None else since
    async with asyncio.timeout(timeout):
        while stream.state is not state and all(c.current is not state for c in stream.changes[seen:]):
            await asyncio.sleep(0.02)
