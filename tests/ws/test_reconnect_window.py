"""Tests of the reconnect window: every connection is told how long the fleet needs to take this instance's crowd."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import websocket

from testbed.wait import wait_for
from tests.harness.metrics import sample
from tests.harness.ws_client import Client, EventClient, open_client, open_event_stream
from tests.harness.ws_server import ServerFactory
from vora.ws.window import window_seconds

pytestmark = [pytest.mark.slow, pytest.mark.ws]

Connect = Callable[..., EventClient]
Setup = Callable[..., str]


def window_of(client: EventClient) -> Any:
    """Read a connection's channelOpened and return the reconnect window it announces."""
    opened = client.next(skip=())
    assert opened["type"] == "channelOpened", opened
    return opened["data"]["reconnectWindowSeconds"]


def heartbeat_window(client: EventClient, wanted: float, timeout: float = 15.0) -> list[Any]:
    """Read heartbeats until one announces the wanted window; return every window they announced."""
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while not seen or seen[-1] != wanted:
        heartbeat = client.next(skip=("channelOpened",), timeout=max(0.1, deadline - time.monotonic()))
        assert heartbeat["type"] == "heartbeat", heartbeat
        seen.append(heartbeat["data"]["reconnectWindowSeconds"])
    return seen


def test_window_is_the_sockets_over_the_rate_rounded_up_within_its_bounds() -> None:
    """The window is ceil(sockets / rate) seconds, never under the minimum nor over the maximum."""
    assert window_seconds(0, 500, 1.0, 20.0) == 1.0
    assert window_seconds(1, 500, 1.0, 20.0) == 1.0
    assert window_seconds(2_500, 500, 1.0, 20.0) == 5.0
    assert window_seconds(2_501, 500, 1.0, 20.0) == 6.0
    assert window_seconds(10_000, 500, 1.0, 20.0) == 20.0
    assert window_seconds(50_000, 500, 1.0, 20.0) == 20.0
    assert window_seconds(3, 1, 0.5, 2.5) == 2.5


def test_window_grows_with_the_sockets_open_on_the_instance(
    make_server: ServerFactory, setup_token: Setup, connect_either: Connect
) -> None:
    """At 2 admissions a second, each new socket of a one-worker server counts itself: 1, 1, 2, 2, 3, 3 s."""
    with make_server(reconnect_rate="2") as server:
        token = setup_token(server)
        windows = [window_of(connect_either(server, token)) for _ in range(6)]
    assert windows == [1, 1, 2, 2, 3, 3]


def test_window_stays_within_its_minimum_and_maximum(
    make_server: ServerFactory, setup_token: Setup, connect_either: Connect
) -> None:
    """At 1 admission a second the window would be 1, 2, 3, 4 s: the bounds 2 and 3 clamp it."""
    with make_server(reconnect_rate="1", reconnect_window_min="2", reconnect_window_max="3") as server:
        token = setup_token(server)
        windows = [window_of(connect_either(server, token)) for _ in range(4)]
    assert windows == [2, 2, 3, 3]


def test_heartbeats_carry_the_window_as_sockets_come_and_go(
    make_server: ServerFactory, setup_token: Setup, connect_either: Connect
) -> None:
    """A socket's heartbeats announce the window of the sockets open now: it grows as others open, then shrinks."""
    with make_server(reconnect_rate="1", ws_heartbeat_interval="0.5") as server:
        token = setup_token(server)
        watched = connect_either(server, token)
        assert window_of(watched) == 1
        others = [connect_either(server, token) for _ in range(3)]
        assert [window_of(other) for other in others] == [2, 3, 4]
        grown = heartbeat_window(watched, 4)
        for other in others:
            other.close()
        shrunk = heartbeat_window(watched, 1)
    assert set(grown) <= {1, 2, 3, 4}
    assert all(later <= earlier for earlier, later in itertools.pairwise(shrunk))


def test_window_counts_the_sockets_open_on_every_worker_of_the_instance(
    make_server: ServerFactory, setup_token: Setup, connect_either: Connect
) -> None:
    """On a two-worker server the third socket, of either transport, counts all three, wherever each one landed.

    At 1 admission a second its window is 3 s: the instance's count, which no worker's own count
    times two (the estimate) can be. Once both earlier sockets' heartbeats announce 2, every worker
    that holds one has read the other's count since both opened; a worker holding none reads afresh.
    """
    with (
        contextlib.ExitStack() as stack,
        make_server(workers=2, reconnect_rate="1", ws_heartbeat_interval="0.5") as server,
    ):
        token = setup_token(server)
        websocket = stack.enter_context(contextlib.closing(open_client(server.ws_url, token)))
        stream = stack.enter_context(contextlib.closing(open_event_stream(server.base_url, token)))
        for earlier in (websocket, stream):
            heartbeat_window(earlier, 2)
        assert window_of(connect_either(server, token)) == 3


def survives(client: Client) -> bool:
    """Tell whether a socket still gets its heartbeats (its worker lives) or was cut (its worker died)."""
    try:
        client.next(skip=("channelOpened",), timeout=5.0)
    except websocket.WebSocketConnectionClosedException:
        return False
    return True


def test_a_dead_workers_sockets_leave_the_window(make_server: ServerFactory, setup_token: Setup) -> None:
    """The sockets of a worker killed with SIGKILL stop counting once the master has reaped it and its files."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(make_server(workers=2, reconnect_rate="1", ws_heartbeat_interval="0.5"))
        token = setup_token(server)
        sockets = [stack.enter_context(contextlib.closing(open_client(server.ws_url, token))) for _ in range(4)]
        for client in sockets:
            heartbeat_window(client, 4)
        scrape = requests.get(server.metrics_url, timeout=5).text
        held = {
            pid: sample(scrape, "vora_open_connections", pid=str(pid), transport="websocket")
            for pid in server.worker_pids()
        }
        victim = max(held, key=lambda pid: held[pid])  # holds 2 or more of the 4
        os.kill(victim, signal.SIGKILL)
        # Gone from the master's children once reaped: child_exit (mark_process_dead) has run by then.
        wait_for(lambda: victim not in server.worker_pids(), 10.0, what="the killed worker reaped")
        survivors = [client for client in sockets if survives(client)]
        assert len(survivors) == 4 - held[victim]
        for client in survivors:
            heartbeat_window(client, len(survivors))
        opened = stack.enter_context(contextlib.closing(open_client(server.ws_url, token)))
        assert window_of(opened) == len(survivors) + 1


def test_event_stream_retry_is_drawn_within_the_window(make_server: ServerFactory, setup_token: Setup) -> None:
    """Each stream's `retry:` lies between 0.5 s and its window, and within VORA_SSE_RETRY_WINDOW when that is less."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(make_server(reconnect_rate="1", reconnect_window_max="3"))
        token = setup_token(server)
        for expected in (1, 2, 3, 3, 3, 3, 3, 3):
            stream = open_event_stream(server.base_url, token)
            stack.callback(stream.close)
            assert window_of(stream) == expected
            assert stream.retry_ms is not None
            assert 500 <= stream.retry_ms <= expected * 1000
    with make_server(reconnect_window_min="10", sse_retry_window="1") as server:
        stream = open_event_stream(server.base_url, setup_token(server))
        try:
            assert window_of(stream) == 10
            assert stream.retry_ms is not None
            assert 500 <= stream.retry_ms <= 1000
        finally:
            stream.close()
