"""Tests of the Prometheus metrics on the operators' port, scraped from the real server."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests
import websocket
from prometheus_client import REGISTRY

from testbed.ports import free_port
from testbed.vora_server import RunningServer, running_server
from testbed.wait import wait_for
from tests.harness.metrics import sample
from tests.harness.tokens import TokenFactory
from vora.app import create_app
from vora.core.settings import Settings
from vora.observability.metrics import (
    GcPauseTimer,
    Metrics,
    flush_gc_pauses,
    observe_request,
    time_garbage_collections,
)
from vora.services import services_of
from vora.store import keys

pytestmark = [pytest.mark.slow]

IDENTITY = "910111000"
STALL_SECONDS = 1.2


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path, redisdb: redis.Redis) -> Iterator[RunningServer]:
    """Serve VORA with two workers, so the totals must add up across processes."""
    with running_server({**env, "VORA_WS_HEARTBEAT_INTERVAL": "30"}, tmp_path, workers=2) as running:
        yield running


def test_metrics_move_after_a_client_journey(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis, env: dict[str, str]
) -> None:
    """After setup, a socket, a published event and logout, the request, socket and event counters moved."""
    before = requests.get(server.metrics_url, timeout=5).text
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    for _ in range(3):
        assert requests.get(f"{server.base_url}/identity", headers=headers, timeout=5).status_code == 200
    assert requests.get(f"{server.base_url}/identity", timeout=5).status_code == 401
    setup = requests.post(
        f"{server.base_url}/identity/setup",
        json={"connectionType": "WebSocket", "identity": IDENTITY},
        headers=headers,
        timeout=5,
    )
    ws = websocket.create_connection(f"{server.ws_url}?token={setup.json()['webSocketToken']}", timeout=10)
    assert json.loads(ws.recv())["type"] == "channelOpened"
    subprocess.run(
        [sys.executable, "-m", "vora.cli", "events", "publish", IDENTITY, "callRinging", "--data", '{"callId":"c"}'],
        env={**env, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    assert json.loads(ws.recv())["type"] == "callRinging"
    during = requests.get(server.metrics_url, timeout=5).text
    assert sample(during, "vora_ws_open_sockets") == 1
    requests.post(f"{server.base_url}/logout/{IDENTITY}", headers=headers, timeout=5).raise_for_status()
    assert json.loads(ws.recv())["type"] == "channelTerminated"
    ws.close()
    after = requests.get(server.metrics_url, timeout=5).text

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("vora_http_requests_total", operation="identities", method="GET", status="200") == 3
    assert moved("vora_http_requests_total", operation="identities", method="GET", status="401") == 1
    assert moved("vora_http_requests_total", operation="setup", method="POST", status="200") == 1
    assert moved("vora_http_requests_total", operation="logout", method="POST", status="200") == 1
    assert moved("vora_http_request_duration_seconds_count", operation="identities") == 4
    # Deliveries reach the metrics port when the worker flushes them (each second, and as a socket ends).
    delivered_before = sample(before, "vora_events_delivered_total")
    wait_for(
        lambda: sample(requests.get(server.metrics_url, timeout=5).text, "vora_events_delivered_total")
        >= delivered_before + 2,  # callRinging and channelTerminated
        5,
        what="the deliveries on the metrics port",
    )
    assert moved("vora_events_received_total") >= 1
    assert sample(after, "vora_ws_open_sockets") == 0


def test_redis_errors_are_counted(settings: Settings, auth: Callable[..., dict[str, str]]) -> None:
    """A REST call that fails on Redis counts into vora_redis_errors_total{where="rest"}."""

    def rest_errors() -> float:
        return REGISTRY.get_sample_value("vora_redis_errors_total", {"where": "rest"}) or 0.0

    app = create_app(settings.with_changes(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.2))
    before = rest_errors()
    assert app.test_client().get("/vora/identity", headers=auth()).status_code == 503
    assert rest_errors() - before == 1
    assert services_of(app).metrics.get("redis_error:rest") == 1


@pytest.mark.parametrize(("name", "exported_as"), [("delivered", "delivered"), ("received", "received")])
def test_hot_counters_reach_prometheus_at_flush_and_are_counted_locally_at_once(name: str, exported_as: str) -> None:
    """Deliveries and bus notices show in the local tally at once and in their Prometheus counter after flush()."""

    def exported() -> float:
        return REGISTRY.get_sample_value(f"vora_events_{exported_as}_total") or 0.0

    metrics = Metrics()
    before = exported()
    metrics.count(name, 3)
    metrics.count(name, 2)
    assert (metrics.get(name), exported() - before) == (5, 0)
    metrics.flush()
    metrics.flush()  # nothing new: adds nothing
    assert (metrics.get(name), exported() - before) == (5, 5)


def test_metrics_are_not_on_the_public_port(server: RunningServer) -> None:
    """The API port does not serve /metrics: operators keep the metrics port private."""
    assert requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).status_code == 404
    assert requests.get(f"{server.base_url}/metrics", timeout=5).status_code == 404


def test_observe_request_counts_each_label_set_apart() -> None:
    """Requests keep counting under their own operation, method and status, however often their labels repeat."""

    def count(status: str) -> float:
        labels = {"operation": "metrics-test", "method": "GET", "status": status}
        return REGISTRY.get_sample_value("vora_http_requests_total", labels) or 0.0

    before = (count("200"), count("404"))
    for status in (200, 200, 404):
        observe_request("metrics-test", "GET", status, 0.001)
    assert (count("200"), count("404")) == (before[0] + 2, before[1] + 1)
    latency = REGISTRY.get_sample_value("vora_http_request_duration_seconds_count", {"operation": "metrics-test"})
    assert latency == 3


def families_at_start() -> dict[str, dict[str, str]]:
    """Return one sample each new family must show at zero before anything happened, by name."""
    return {
        "vora_redis_errors_total": {"where": "rest"},
        "vora_holdup_signals_total": {"outcome": "holdUpNotReady", "reason": "timeout"},
        "vora_connection_closes_total": {"transport": "websocket", "code": "4008"},
        "vora_channel_terminated_total": {"transport": "websocket", "reason": "logout"},
        "vora_handshake_refusals_total": {"transport": "websocket", "reason": "overloaded"},
        "vora_event_delivery_seconds_count": {"transport": "websocket"},
        "vora_catch_up_events_count": {"transport": "websocket"},
        "vora_push_queue_jobs": {},
        "vora_push_queue_oldest_age_seconds": {},
    }


def scrape(server: RunningServer) -> str:
    """Return the metrics port's text."""
    return requests.get(server.metrics_url, timeout=5).text


def open_connections(text: str) -> float:
    """Return the WebSocket connections open on all workers together."""
    return sum(float(v) for v in re.findall(r'^vora_open_connections\{[^}]*transport="websocket"\} (\S+)$', text, re.M))


PROCESS_GAUGES = ("vora_worker_open_fds", "vora_worker_max_fds", "vora_worker_resident_memory_bytes")


def test_every_family_is_present_at_zero_from_start_up(server: RunningServer) -> None:
    """Before any request, every labelled counter an alert reads exists at zero, and each worker reports itself."""
    pids = {str(pid) for pid in server.worker_pids()}

    def every_worker_reported() -> str | None:
        text = scrape(server)
        for name in PROCESS_GAUGES:
            reported = re.findall(rf'^{name}\{{pid="(\d+)"\}} (\S+)$', text, re.M)
            if {pid for pid, value in reported if float(value) > 0} != pids:
                return None
        return text

    # The server is live once one worker answers; the other may still be starting, its gauges there at zero
    # until its first sample (seen in make test: open_fds 0 on a worker whose max_fds line was already out).
    text = wait_for(every_worker_reported, 10, what="every worker's process gauges")
    for name, labels in families_at_start().items():
        assert re.search(rf"^{name}\{{?[^\n]*\}}? 0\.0$", text, re.M), name
        assert f"{name}{{" in text or not labels, name
        assert sample(text, name, **labels) == 0, name
    for where in ("rest", "bus", "lease", "push"):
        assert f'vora_redis_errors_total{{where="{where}"}} 0.0' in text
    # A close code or reason outside the known set counts as "other": that series is there at zero too.
    for transport in ("websocket", "sse"):
        assert f'vora_connection_closes_total{{code="other",transport="{transport}"}} 0.0' in text
        assert f'vora_channel_terminated_total{{reason="other",transport="{transport}"}} 0.0' in text
        assert f'vora_handshake_refusals_total{{reason="other",transport="{transport}"}} 0.0' in text
    assert sample(text, "vora_redis_up") == 1
    for name in PROCESS_GAUGES:
        reported = set(re.findall(rf'^{name}\{{pid="(\d+)"\}} (\S+)$', text, re.M))
        assert {pid for pid, _ in reported} == pids, name
        assert all(float(value) > 0 for _, value in reported), name
    for pid in pids:
        assert sample(text, "vora_worker_connections_limit", pid=pid) == Settings().worker_connections
        assert sample(text, "vora_open_connections", pid=pid, transport="websocket") == 0


def test_a_stalled_worker_shows_as_loop_lag_and_a_warning(env: dict[str, str], tmp_path: Path) -> None:
    """A worker stopped for 1.2 s records a loop lag over 1 s and logs the stall with its length."""
    with running_server(env, tmp_path, workers=1) as served:
        (pid,) = served.worker_pids()
        wait_for(lambda: sample(scrape(served), "vora_worker_loop_lag_seconds_count") > 0, 10, what="a first probe")
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(STALL_SECONDS)  # the stall itself: nothing in the worker runs meanwhile
        finally:
            os.kill(pid, signal.SIGCONT)

        def stalls(text: str) -> float:
            return sample(text, "vora_worker_loop_lag_seconds_count") - sample(
                text, "vora_worker_loop_lag_seconds_bucket", le="1.0"
            )

        def stalled() -> str | None:
            text = scrape(served)
            return text if stalls(text) >= 1 else None

        text = wait_for(stalled, 10, what="a lag over 1 s")
        wait_for(lambda: "worker event loop stalled" in served.log(), 10, what="the stall warning")
        warnings = [json.loads(line) for line in served.log().splitlines() if "worker event loop stalled" in line]
    assert stalls(text) == 1
    assert sample(text, "vora_worker_loop_lag_seconds_bucket", le="+Inf") - stalls(text) > 0  # the probes before
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert 1.0 <= warnings[0]["seconds"] < STALL_SECONDS + 5
    for generation in ("0", "1", "2"):
        assert f'vora_worker_gc_pause_seconds_count{{generation="{generation}"}}' in text


def test_garbage_collections_are_timed_by_generation() -> None:
    """Each collection lands in its generation's histogram at the next flush, once however often timing is on."""

    def counted(generation: str) -> float:
        return REGISTRY.get_sample_value("vora_worker_gc_pause_seconds_count", {"generation": generation}) or 0.0

    before = {generation: counted(generation) for generation in "012"}
    assert time_garbage_collections() is time_garbage_collections()
    try:
        gc.collect(1)
        gc.collect(2)
        assert counted("2") == before["2"]  # counted in the callback, observed only at the flush
        flush_gc_pauses()
    finally:
        gc.callbacks[:] = [callback for callback in gc.callbacks if not isinstance(callback, GcPauseTimer)]
    assert counted("1") == before["1"] + 1
    assert counted("2") == before["2"] + 1
    assert (REGISTRY.get_sample_value("vora_worker_gc_pause_seconds_sum", {"generation": "2"}) or 0) > 0


def test_a_collection_inside_a_metric_write_does_not_deadlock(tmp_path: Path) -> None:
    """Collections set off inside prometheus-client's multiprocess lock are timed without taking it again."""
    code = """
import gc
from prometheus_client import Counter
from vora.observability.metrics import flush_gc_pauses, time_garbage_collections
made = Counter("gc_in_metric_write_total", "Children made while collections run.", ["n"])
time_garbage_collections()
gc.set_threshold(1)  # a collection on almost every allocation: many fall inside a metric write
for n in range(2000):
    made.labels(str(n)).inc()
flush_gc_pauses()
print("done")
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.stdout.strip() == "done", result.stderr[-2000:]


def test_socket_journey_is_measured_and_its_lifetime_is_no_http_request(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis, env: dict[str, str]
) -> None:
    """A socket's refusals, catch-up, delivery, termination and close are counted; its upgrade is no HTTP request."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    setup = requests.post(
        f"{server.base_url}/identity/setup",
        json={"connectionType": "WebSocket", "identity": IDENTITY},
        headers=headers,
        timeout=5,
    )
    token = setup.json()["webSocketToken"]
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"{server.ws_url}?token=v1.nobody", timeout=10)
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"{server.ws_url}?token={token}&junk=1", timeout=10)
    ws = websocket.create_connection(f"{server.ws_url}?token={token}", timeout=10)
    assert json.loads(ws.recv())["type"] == "channelOpened"
    assert sample(scrape(server), "vora_ws_open_sockets") == 1
    during = scrape(server)
    assert open_connections(during) == 1
    subprocess.run(
        [sys.executable, "-m", "vora.cli", "events", "publish", IDENTITY, "callRinging", "--data", '{"callId":"c"}'],
        env={**env, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    assert json.loads(ws.recv())["type"] == "callRinging"
    requests.post(f"{server.base_url}/logout/{IDENTITY}", headers=headers, timeout=5).raise_for_status()
    assert json.loads(ws.recv())["type"] == "channelTerminated"
    ws.close()

    def settled() -> bool:
        text = scrape(server)
        return (
            sample(text, "vora_event_delivery_seconds_count", transport="websocket") == 1
            and sample(text, "vora_connection_closes_total", transport="websocket", code="1000") == 1
        )

    wait_for(settled, 5, what="the delivery and the close on the metrics port")
    after = scrape(server)
    assert 0 <= sample(after, "vora_event_delivery_seconds_sum", transport="websocket") < 5
    assert sample(after, "vora_channel_terminated_total", transport="websocket", reason="logout") == 1
    assert sample(after, "vora_catch_up_events_count", transport="websocket") == 1
    assert sample(after, "vora_handshake_refusals_total", transport="websocket", reason="unauthorized") == 1
    assert sample(after, "vora_handshake_refusals_total", transport="websocket", reason="bad_request") == 1
    assert open_connections(after) == 0
    # The accepted upgrade is not an HTTP request; the two refused handshakes are, under their own operation.
    assert 'operation="unmatched"' not in after
    assert not re.search(r'^vora_http_requests_total\{[^}]*status="(0|101)"', after, re.M)
    assert sample(after, "vora_http_requests_total", operation="websocket", method="GET", status="401") == 1
    assert sample(after, "vora_http_requests_total", operation="websocket", method="GET", status="400") == 1


def test_delivery_latencies_reach_the_histogram_at_flush() -> None:
    """Live deliveries' latencies land in their buckets, weighted by the sockets written, at flush()."""

    def bucket(le: str) -> float:
        labels = {"transport": "websocket", "le": le}
        return REGISTRY.get_sample_value("vora_event_delivery_seconds_bucket", labels) or 0.0

    metrics = Metrics()
    before = (bucket("0.005"), bucket("0.5"), bucket("+Inf"))
    metrics.latency("websocket", 3, 10)  # one event written to ten sockets 3 ms after its publication
    metrics.latency("websocket", 300, 1)
    metrics.latency("websocket", -2, 1)  # Redis' clock ahead of the worker's: counted as 0
    assert bucket("+Inf") == before[2]
    metrics.flush()
    assert (bucket("0.005"), bucket("0.5"), bucket("+Inf")) == (before[0] + 11, before[1] + 12, before[2] + 12)


def test_unknown_label_values_are_counted_as_other() -> None:
    """A close code, reason or place outside the documented set counts under "other": the label sets stay bounded."""
    metrics = Metrics()
    before = REGISTRY.get_sample_value("vora_connection_closes_total", {"transport": "websocket", "code": "other"})
    metrics.count("close:websocket:4999")
    metrics.count("terminated:websocket:someNewReason")
    after = REGISTRY.get_sample_value("vora_connection_closes_total", {"transport": "websocket", "code": "other"})
    assert (after or 0) - (before or 0) == 1
    assert REGISTRY.get_sample_value("vora_channel_terminated_total", {"transport": "websocket", "reason": "other"})


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_a_handshake_redis_refuses_counts_as_a_redis_refusal(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis, transport: str
) -> None:
    """A socket or event stream refused 503 because Redis is full counts in refusals as redis_unavailable."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    setup = requests.post(
        f"{server.base_url}/identity/setup",
        json={"connectionType": "WebSocket", "identity": IDENTITY},
        headers={"Authorization": f"Bearer {make_token('alice')}"},
        timeout=5,
    )
    token = setup.json()["webSocketToken"]
    redisdb.config_set("maxmemory", "1")  # full: the admission script, which records the socket, is refused
    try:
        if transport == "websocket":
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                websocket.create_connection(f"{server.ws_url}?token={token}", timeout=10)
            assert refused.value.status_code == 503
        else:
            answer = requests.get(f"{server.base_url}/sse", params={"token": token}, timeout=10)
            assert answer.status_code == 503
            assert "Redis is full" in answer.json()["message"]
    finally:
        redisdb.config_set("maxmemory", "0")
    text = scrape(server)
    assert sample(text, "vora_handshake_refusals_total", transport=transport, reason="redis_unavailable") == 1
    assert sample(text, "vora_handshake_refusals_total", transport=transport, reason="other") == 0
