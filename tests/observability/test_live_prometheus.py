"""A real Prometheus scrapes a real VORA under a small load; every dashboard query and recording rule answers series."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import websocket
import yaml

from testbed.vora_server import RunningServer, running_server
from testbed.wait import WaitTimeout, wait_for
from tests.harness.prometheus import (
    DASHBOARD,
    RULES,
    RunningPrometheus,
    prometheus_binary,
    running_prometheus,
)
from tests.harness.tokens import TokenFactory
from vora.core.settings import Settings
from vora.services import build_stores
from vora.store import keys

pytestmark = [
    pytest.mark.slow,
    pytest.mark.prometheus,
    pytest.mark.skipif(prometheus_binary() is None, reason="prometheus is missing: run `make test-tools`"),
]

IDENTITY = "910111000"
SOCKETS = 3
EVENTS = 5
SERIES_TIMEOUT = 45.0  # scrapes every second; rate() needs two samples after the load
# Grafana's variables, as a user choosing every instance would have them expanded.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$instance": ".*"}


def dashboard_queries() -> dict[str, str]:
    """Return every dashboard query with Grafana's variables expanded, by panel title and refId."""
    board = json.loads(DASHBOARD.read_text())
    queries = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries[f"panel {panel['title']!r} {target['refId']}"] = expr
    return queries


def recording_rules() -> dict[str, str]:
    """Return every recording rule's expression, and the series it records, by name."""
    queries = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                queries[f"rule {rule['record']}"] = rule["expr"]
                queries[f"recorded {rule['record']}"] = rule["record"]
    return queries


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path, redisdb: redis.Redis) -> Iterator[RunningServer]:
    """Serve VORA with two workers."""
    with running_server(env, tmp_path, workers=2) as running:
        yield running


@pytest.fixture
def prometheus(server: RunningServer, tmp_path: Path) -> Iterator[RunningPrometheus]:
    """Run Prometheus scraping the server's metrics port as job "vora", once it has scraped it."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    with running_prometheus(directory, [f"127.0.0.1:{server.metrics_port}"]) as running:
        wait_for(running.targets_up, 30, what="Prometheus' first good scrape of VORA")
        yield running


def small_load(server: RunningServer, settings: Settings, make_token: TokenFactory, redisdb: redis.Redis) -> None:
    """Open a few sockets, publish a few events to them, refuse a handshake, probe readiness and log one out."""
    with contextlib.ExitStack() as sockets_closed:
        sockets: list[websocket.WebSocket] = []
        load_sockets(server, settings, make_token, redisdb, sockets, sockets_closed)


def load_sockets(
    server: RunningServer,
    settings: Settings,
    make_token: TokenFactory,
    redisdb: redis.Redis,
    sockets: list[websocket.WebSocket],
    sockets_closed: contextlib.ExitStack,
) -> None:
    """Do small_load's work, each socket closed by sockets_closed whatever happens."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    for _ in range(SOCKETS):
        setup = requests.post(
            f"{server.base_url}/identity/setup",
            json={"connectionType": "WebSocket", "identity": IDENTITY},
            headers=headers,
            timeout=5,
        )
        setup.raise_for_status()
        sockets.append(
            websocket.create_connection(f"{server.ws_url}?token={setup.json()['webSocketToken']}", timeout=10)
        )
        sockets_closed.callback(sockets[-1].close)
    publisher = build_stores(settings).publisher
    for number in range(EVENTS):
        publisher.publish(IDENTITY, "callRinging", {"callId": f"call-{number}"})
    for ws in sockets:
        received = [json.loads(ws.recv())["type"] for _ in range(EVENTS + 1)]
        assert received == ["channelOpened"] + ["callRinging"] * EVENTS
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"{server.ws_url}?token=v1.unknown", timeout=10)
    assert requests.get(f"{server.base_url}/health/readiness", timeout=5).status_code == 204
    requests.post(f"{server.base_url}/logout/{IDENTITY}", headers=headers, timeout=5).raise_for_status()
    for ws in sockets:
        assert json.loads(ws.recv())["type"] == "channelTerminated"


def answers(prometheus: RunningPrometheus, queries: dict[str, str]) -> dict[str, str]:
    """Evaluate each query once; return what is still wrong with each that errs or has no series."""
    wrong = {}
    for name, expr in queries.items():
        try:
            series = prometheus.query(expr)
        except AssertionError as exc:
            wrong[name] = f"error: {exc}"
            continue
        if not series:
            wrong[name] = f"no series: {expr}"
    return wrong


def test_every_dashboard_query_and_recording_rule_answers(
    server: RunningServer,
    prometheus: RunningPrometheus,
    settings: Settings,
    make_token: TokenFactory,
    redisdb: redis.Redis,
) -> None:
    """Under a small load, each dashboard query and recording rule evaluates without error and returns series."""
    small_load(server, settings, make_token, redisdb)
    queries = {**dashboard_queries(), **recording_rules()}
    wrong: dict[str, str] = {}

    def all_answer() -> bool:
        wrong.clear()
        wrong.update(answers(prometheus, queries))
        return not wrong

    try:
        wait_for(all_answer, SERIES_TIMEOUT, what="every query to return series", ignore=())
    except WaitTimeout:
        pytest.fail("queries that never answered:\n" + "\n".join(f"{k}: {v}" for k, v in sorted(wrong.items())))
    # The load shows where it should: deliveries were measured, and the rules evaluate without error.
    # Each worker flushes its counts every second and Prometheus scrapes every second: a series can
    # answer while a worker's last flush is still to be scraped, so the totals are awaited.
    totals = {
        'sum(vora_event_delivery_seconds_count{job="vora", transport="websocket"})': SOCKETS * EVENTS,
        'sum(vora_channel_terminated_total{job="vora", reason="logout"})': SOCKETS,
    }
    seen: dict[str, float] = {}

    def totals_reached() -> bool:
        seen.update({expr: float(prometheus.query(expr)[0]["value"][1]) for expr in totals})
        return seen == {expr: float(total) for expr, total in totals.items()}

    try:
        wait_for(totals_reached, SERIES_TIMEOUT, what="the load's totals to be scraped", ignore=())
    except WaitTimeout:
        pytest.fail(f"totals scraped {seen}, expected {totals}")
    unhealthy = [
        (rule["name"], rule.get("lastError"))
        for group in prometheus.rule_groups()
        for rule in group["rules"]
        if rule["health"] != "ok"
    ]
    assert unhealthy == []


def test_a_broken_query_is_reported(server: RunningServer, prometheus: RunningPrometheus) -> None:
    """The check can fail: a query with a syntax error, and one about a metric VORA does not export, are caught."""
    wrong = answers(prometheus, {"bad": "sum(rate(vora_http_requests_total[30s]", "absent": "vora_no_such_metric"})
    assert wrong["bad"].startswith("error:")
    assert wrong["absent"].startswith("no series:")


def test_every_alert_expression_is_valid_against_live_data(prometheus: RunningPrometheus) -> None:
    """Every alerting rule's expression evaluates without error against what VORA really exports."""
    rules: list[dict[str, Any]] = [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule
    ]
    errors = {}
    for rule in rules:
        try:
            prometheus.query(rule["expr"])
        except AssertionError as exc:
            errors[rule["alert"]] = str(exc)
    assert errors == {}
    loaded = {
        rule["name"] for group in prometheus.rule_groups() for rule in group["rules"] if rule["type"] == "alerting"
    }
    assert loaded == {rule["alert"] for rule in rules}
    assert prometheus.query('vora_redis_up{job="vora"}')[0]["value"][1] == "1"
