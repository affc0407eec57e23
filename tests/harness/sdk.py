"""VORA servers for the Python SDK's tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from vora_client import EventStreamTransport, Transport, TransportChoice, WebSocketTransport

from testbed.vora_server import RunningServer

IDENTITY = "910111000"


SERVER_KEY = "sdk-test-server-key-0123456789abcdefghijklmnop"


ServerFactory = Callable[..., contextlib.AbstractContextManager[RunningServer]]


def real_transport(server: RunningServer, transport: TransportChoice) -> Transport:
    """Return the SDK's own transport of the chosen kind to the server, for a test to wrap."""
    if transport == "websocket":
        return WebSocketTransport(server.ws_url)
    return EventStreamTransport(f"{server.base_url}/sse")
