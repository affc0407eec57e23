"""Tests of the benchmark's load generator: it opens streams over each transport and counts what they receive.

The storm's tests run over both engines: the Python reference (bench/wsclient.py) and the Node
one (bench/peers/wsload.js), which must answer the same commands with the same figures.
"""

from __future__ import annotations

import time
from collections import Counter

import psutil
import pytest

from bench.context import Bench, Rest, identities
from bench.scenarios.fanout import BaselinePublisher, Publisher, event_data, publish_events, vora_publisher
from bench.scenarios.storm import RecordingPublisher
from bench.wsclient import ENGINES, Engine, WsLoad, WsLoadPool
from testbed.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ws]

STREAMS_PER_IDENTITY = 3
EVENTS = 30


@pytest.mark.parametrize(
    ("target", "transport", "engine"),
    [("vora", "sse", "python"), ("vora", "ws", "python"), ("vora", "ws", "node"), ("baseline", "sse", "python")],
)
def test_load_client_counts_every_event_on_every_stream(
    bench: Bench, target: str, transport: str, engine: Engine
) -> None:
    """Streams opened by the load generator on a real server receive every event once, in order, with a latency."""
    ids = identities(f"{79 - ENGINES.index(engine)}{len(target)}{len(transport)}", 2)
    with bench.servers() as (vora, baseline):
        tokens = bench.open_sessions(vora, f"bench-test-{target}-{transport}", ids, per_identity=1)
        publish: Publisher
        if target == "vora":
            urls = [f"{vora.stream_url(transport)}?token={t}" for t in tokens for _ in range(STREAMS_PER_IDENTITY)]
            publish = vora_publisher(bench.publisher)
        else:
            urls = [f"{baseline.stream_url(transport)}?identity={i}" for i in ids for _ in range(STREAMS_PER_IDENTITY)]
            publish = BaselinePublisher(bench.redis)
        client = WsLoadPool(bench.procs, f"load-{target}-{transport}-{engine}", len(urls), engine=engine)
        try:
            opened = client.call({"cmd": "open", "urls": urls, "concurrency": 4}, timeout=60)
            assert opened["held"] == len(urls), opened
            # Each stream must have its identity's primer before the counted events (sequence numbers start there).
            first = {identity: publish(identity, "presence", event_data("presence", 0)) for identity in ids}
            primed = client.call({"cmd": "wait_primed", "first": first, "timeout": 10}, timeout=30)
            assert primed["unprimed"] == 0, primed
            client.call({"cmd": "reset"}, timeout=10)
            published = publish_events(publish, ids, EVENTS, rate=None)
            report = client.call({"cmd": "expect", "final": published["final"], "timeout": 10}, timeout=30)
            closed = client.call({"cmd": "close"}, timeout=30)
        finally:
            client.stop()
    assert report["deliveries"] == EVENTS * STREAMS_PER_IDENTITY, report
    assert (report["gaps"], report["duplicates"], report["missing_at_end"]) == (0, 0, 0), report
    assert report["latency_samples"] == EVENTS * STREAMS_PER_IDENTITY
    assert report["held"] == len(urls)
    assert closed["closed"] == len(urls)


def test_a_stream_the_server_ends_reports_its_close_code(bench: Bench) -> None:
    """Logout ends VORA's event streams with channelTerminated and the closing comment's 1000, as it ends sockets."""
    ids = identities("7990", 1)
    subject = "bench-test-close"
    with bench.vora_server() as vora:
        tokens = bench.open_sessions(vora, subject, ids, per_identity=1)
        client = WsLoadPool(bench.procs, "load-close", 2)
        try:
            urls = [f"{vora.stream_url('sse')}?token={tokens[0]}"] * 2
            assert client.call({"cmd": "open", "urls": urls, "concurrency": 2}, timeout=30)["held"] == 2
            rest = Rest(vora, bench.token(subject))
            try:
                assert rest.call("POST", f"/logout/{ids[0]}")[0] == 200
            finally:
                rest.close()
            wait_for(lambda: client.call({"cmd": "status"}, timeout=10)["closed"] == 2, 10, what="both streams ended")
            status = client.call({"cmd": "status"}, timeout=10)
        finally:
            client.stop()
    assert status["close_codes"] == {"1000": 2}, status
    assert status["terminated"] == {"logout": 2}, status


@pytest.mark.parametrize("engine", ENGINES)
def test_dropped_sockets_draw_their_first_attempt_from_the_window_their_server_announced(
    bench: Bench, engine: Engine
) -> None:
    """The storm's client waits within the last reconnectWindowSeconds it received, not the scenario's fallback."""
    ids = identities("7991", 1)
    subject = f"bench-test-window-{engine}"
    sockets = 4
    with (
        bench.vora_server(
            VORA_RECONNECT_RATE="1", VORA_RECONNECT_WINDOW_MAX="3", VORA_WS_HEARTBEAT_INTERVAL="0.5"
        ) as a,
        bench.vora_server() as b,
    ):
        tokens = bench.open_sessions(a, subject, ids, per_identity=1)
        client = WsLoad(bench.procs, f"load-window-{engine}", engine=engine)  # as the storm scenario drives it
        try:
            urls = [f"{a.ws_url}?token={tokens[0]}"] * sockets
            assert client.call({"cmd": "open", "urls": urls, "concurrency": 1}, timeout=30)["held"] == sockets
            # As the storm does: a socket counts as held once open, but learns the window from its first frames.
            heard = client.call({"cmd": "wait_heartbeat", "timeout": 20}, timeout=30)
            assert heard["with_heartbeat"] == sockets, heard
            client.call({"cmd": "failover", "url": b.ws_url, "base": 1, "cap": 30, "first": 20}, timeout=10)
            killed_ns = time.monotonic_ns()
            a.process.kill()

            def all_back() -> bool:
                status = client.call({"cmd": "storm_report", "since_ns": killed_ns, "published": {}}, timeout=10)
                return bool(status["back"] == sockets)

            wait_for(all_back, 30, what="every socket back on B")
            report = client.call({"cmd": "storm_report", "since_ns": killed_ns, "published": {}}, timeout=10)
        finally:
            client.stop()
    window = report["first_window_seconds"]
    assert (window["announced"], window["fallback"]) == (sockets, 0), window
    assert 1 <= window["min"] <= window["max"] <= 3, window


@pytest.mark.parametrize("engine", ENGINES)
def test_sockets_dropped_by_a_killed_server_resume_on_the_other_without_a_gap(bench: Bench, engine: Engine) -> None:
    """A storm in miniature: sockets of a SIGKILLed A resume on B from their lastEventId, back and caught up."""
    ids = identities(f"{77 - ENGINES.index(engine)}90", 1)
    subject = f"bench-test-storm-{engine}"
    sockets = 4
    with bench.vora_server() as a, bench.vora_server() as b:
        tokens = bench.open_sessions(a, subject, ids, per_identity=1)
        publish = RecordingPublisher(vora_publisher(bench.publisher))
        client = WsLoad(bench.procs, f"load-storm-{engine}", engine=engine)
        try:
            urls = [f"{a.ws_url}?token={tokens[0]}"] * sockets
            assert client.call({"cmd": "open", "urls": urls, "concurrency": 2}, timeout=30)["held"] == sockets
            first = {ids[0]: publish(ids[0], "presence", event_data("presence", 0))}
            assert client.call({"cmd": "wait_primed", "first": first, "timeout": 10}, timeout=30)["unprimed"] == 0
            client.call({"cmd": "reset"}, timeout=10)
            client.call({"cmd": "failover", "url": b.ws_url, "base": 1, "cap": 30, "first": 20}, timeout=10)
            publish_events(publish, ids, EVENTS, rate=None)
            killed_ns = time.monotonic_ns()
            a.process.kill()
            # Published while the sockets are away (within A's window of 1 s): replayed after their lastEventId.
            published = publish_events(publish, ids, EVENTS, rate=None)
            report = client.call({"cmd": "expect", "final": published["final"], "timeout": 30}, timeout=60)
            storm = client.call({"cmd": "storm_report", "since_ns": killed_ns, "published": publish.log}, timeout=10)
        finally:
            client.stop()
    assert (report["gaps"], report["duplicates"], report["missing_at_end"]) == (0, 0, 0), report
    assert report["deliveries"] == 2 * EVENTS * sockets, report
    assert (storm["sockets"], storm["back"], storm["caught_up"]) == (sockets, sockets, sockets), storm
    assert storm["handshake_attempts"] >= sockets, storm
    assert 0 < storm["all_back_seconds"] <= storm["all_caught_up_seconds"] < 30, storm
    assert storm["first_window_seconds"]["announced"] == sockets, storm


def test_the_node_engine_reads_the_clock_the_benchmark_stamps_events_with(bench: Bench) -> None:
    """The Node engine's clock is Python's time.monotonic_ns(): latencies and the storm's times compare across them."""
    client = WsLoad(bench.procs, "load-clock", engine="node")
    try:
        client.call({"cmd": "status"}, timeout=30)  # started and answering
        before = time.monotonic_ns()
        node_ns = int(client.call({"cmd": "clock"}, timeout=10)["monotonic_ns"])
        after = time.monotonic_ns()
    finally:
        client.stop()
    assert before <= node_ns <= after, (before, node_ns, after)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_pool_of_processes_connects_from_a_source_address_each(bench: Bench, engine: Engine) -> None:
    """Each process of a load-generator pool binds its sockets to a loopback source address of its own."""
    ids = identities("7991", 1)
    with bench.vora_server() as vora:
        tokens = bench.open_sessions(vora, "bench-test-sources", ids, per_identity=1)
        urls = [f"{vora.ws_url}?token={tokens[0]}"] * 4
        client = WsLoadPool(bench.procs, f"load-sources-{engine}", len(urls), per_process=2, engine=engine)
        try:
            assert client.call({"cmd": "open", "urls": urls, "concurrency": 4}, timeout=30)["held"] == 4
            peers: Counter[str] = Counter()
            for pid in vora.worker_pids():
                for conn in psutil.Process(pid).net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == vora.port:
                        peers[conn.raddr.ip] += 1
        finally:
            client.stop()
    assert client.sources == ["127.0.0.2", "127.0.0.3"]
    assert peers == {"127.0.0.2": 2, "127.0.0.3": 2}, peers
