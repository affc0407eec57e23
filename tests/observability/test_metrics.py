"""Tests of the Prometheus metrics on the operators' port, scraped from the real server."""

from __future__ import annotations

import json
import subprocess
import sys
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
from vora.observability.metrics import Metrics, observe_request
from vora.services import services_of
from vora.store import keys

pytestmark = [pytest.mark.slow]

IDENTITY = "910111000"


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


def test_deliveries_reach_prometheus_at_flush_and_are_counted_locally_at_once() -> None:
    """Counted deliveries show in the local tally at once and in vora_events_delivered_total after flush()."""

    def exported() -> float:
        return REGISTRY.get_sample_value("vora_events_delivered_total") or 0.0

    metrics = Metrics()
    before = exported()
    metrics.count("delivered", 3)
    metrics.count("delivered", 2)
    assert (metrics.get("delivered"), exported() - before) == (5, 0)
    metrics.flush()
    metrics.flush()  # nothing new: adds nothing
    assert (metrics.get("delivered"), exported() - before) == (5, 5)


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
