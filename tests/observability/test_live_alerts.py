"""Alerts go pending in a real Prometheus when a real VORA's trouble really happens (Redis stopped, pushes refused)."""

from __future__ import annotations

import contextlib
import json
import resource
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import websocket

from testbed.redis_procs import RedisServer
from testbed.vora_server import RunningServer, running_server
from testbed.wait import WaitTimeout, wait_for
from testbed.webhooks import WebhookReceiver
from tests.harness.prometheus import (
    OPERATIONS,
    RunningPrometheus,
    heading_anchors,
    prometheus_binary,
    runbook_anchor,
    running_prometheus,
)
from tests.harness.server_api import SERVER_KEY
from tests.harness.tokens import TokenFactory
from vora.store import keys

pytestmark = [
    pytest.mark.slow,
    pytest.mark.prometheus,
    pytest.mark.skipif(prometheus_binary() is None, reason="prometheus is missing: run `make test-tools`"),
]

USER = "alice"
IDENTITY = "910444000"
ALERT_TIMEOUT = 90.0  # scrapes and evaluations every second; a rate() needs two samples of the trouble
GATEWAY_SECRET = "gateway-secret-" + "g" * 24
OPEN_FILES = 160  # the server's open-files limit; an idle worker here holds about 25 files of its own
SOCKETS_NEAR_FILE_LIMIT = 120  # about 145 files: over 80 % of 160, under the limit
DEVICE = {"platform": "apns", "deviceToken": "f" * 64, "appId": "com.example.vora"}


@contextlib.contextmanager
def watched(
    env: dict[str, str], tmp_path: Path, open_files: int | None = None
) -> Iterator[tuple[RunningServer, RunningPrometheus]]:
    """Serve VORA (with an open-files limit), scraped and evaluated every second by Prometheus with the real rules."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    with contextlib.ExitStack() as stack:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if open_files is not None:  # the server inherits the limit; this process gets its own back at once
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))
        try:
            server = stack.enter_context(running_server(env, tmp_path))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        prometheus = stack.enter_context(running_prometheus(directory, [f"127.0.0.1:{server.metrics_port}"]))
        wait_for(prometheus.targets_up, 30, what="Prometheus' first good scrape of VORA")
        # VoraNoInstanceUp may be pending from an evaluation before the first scrape: quiet once evaluated again.
        wait_for(lambda: active(prometheus) == {}, 10, what="no alert before the trouble")
        yield server, prometheus


def server_time(prometheus: RunningPrometheus) -> float:
    """Return Prometheus' clock."""
    return float(prometheus.query("time()")[0]["result"][0])


def open_sockets(server: RunningServer, token: str, count: int, stack: contextlib.ExitStack) -> None:
    """Open count sockets of one session, each closed when the stack ends."""
    for _ in range(count):
        client = websocket.create_connection(f"{server.ws_url}?token={token}", timeout=10)
        stack.callback(client.close)
        assert json.loads(client.recv())["type"] == "channelOpened"


def setup_token(server: RunningServer, make_token: TokenFactory, client: redis.Redis) -> str:
    """Provision alice's identity and return a new session's WebSocket token."""
    client.sadd(keys.user_identities(USER), IDENTITY)
    setup = requests.post(
        f"{server.base_url}/identity/setup",
        json={"connectionType": "WebSocket", "identity": IDENTITY},
        headers={"Authorization": f"Bearer {make_token(USER)}"},
        timeout=5,
    )
    assert setup.status_code == 200, setup.text
    token: str = setup.json()["webSocketToken"]
    return token


def active(prometheus: RunningPrometheus) -> dict[str, dict[str, Any]]:
    """Return the alerts pending or firing now, by name."""
    return {alert["labels"]["alertname"]: alert for alert in prometheus.alerts()}


def await_alerts(prometheus: RunningPrometheus, names: set[str], trouble: Callable[[], None]) -> dict[str, Any]:
    """Keep the trouble going until every named alert is pending or firing; return them by name."""
    seen: dict[str, dict[str, Any]] = {}

    def all_active() -> bool:
        trouble()
        seen.update(active(prometheus))
        return names <= seen.keys()

    try:
        wait_for(all_active, ALERT_TIMEOUT, what=f"alerts {sorted(names)}", ignore=())
    except WaitTimeout:
        pytest.fail(f"alerts never active: {sorted(names - seen.keys())}; active: {sorted(seen)}")
    return {name: seen[name] for name in names}


def assert_actionable(alert: dict[str, Any]) -> None:
    """Check that the alert carries its job, a summary and a runbook_url naming a heading of docs/operations.md."""
    assert alert["state"] in {"pending", "firing"}
    assert alert["labels"]["job"] == "vora"
    assert alert["annotations"]["summary"]
    anchor = runbook_anchor(alert["annotations"]["runbook_url"])
    assert anchor in heading_anchors(OPERATIONS.read_text()), alert["annotations"]["runbook_url"]


def test_a_stopped_redis_raises_the_redis_readiness_and_handshake_alerts(
    env: dict[str, str], tmp_path: Path, make_token: TokenFactory
) -> None:
    """With its Redis stopped, VORA's REST calls, publishes, probes and handshakes fail and each alert goes pending."""
    with RedisServer() as redis_server:
        settings = {
            **env,
            "VORA_REDIS_URL": redis_server.url,
            "VORA_SERVER_API_KEYS": SERVER_KEY,
            "VORA_REDIS_TIMEOUT": "0.5",
            "VORA_WS_ACCEPT_TIMEOUT": "0.2",
        }
        with watched(settings, tmp_path) as (server, prometheus):
            client = redis.Redis.from_url(redis_server.url)
            client.sadd(keys.user_identities(USER), IDENTITY)
            headers = {"Authorization": f"Bearer {make_token(USER)}"}
            setup = requests.post(
                f"{server.base_url}/identity/setup",
                json={"connectionType": "WebSocket", "identity": IDENTITY},
                headers=headers,
                timeout=5,
            )
            token = setup.json()["webSocketToken"]
            redis_server.stop()

            def handshake() -> int:
                try:
                    websocket.create_connection(f"{server.ws_url}?token={token}", timeout=10).close()
                except websocket.WebSocketBadStatusException as refused:
                    return int(refused.status_code)
                return 101

            def trouble() -> None:
                with ThreadPoolExecutor(8) as pool:
                    rest = [pool.submit(requests.get, f"{server.base_url}/identity", headers=headers, timeout=10)]
                    rest += [
                        pool.submit(
                            requests.post,
                            f"{server.server_api_url}/identities/{IDENTITY}/events",
                            json={"type": "callRinging", "data": {"callId": "c"}},
                            headers={"Authorization": f"Bearer {SERVER_KEY}"},
                            timeout=10,
                        )
                    ]
                    live = pool.submit(requests.get, f"{server.base_url}/health/liveness", timeout=10)
                    rest += [pool.submit(requests.get, f"{server.base_url}/health/readiness", timeout=10)]
                    sockets = [pool.submit(handshake) for _ in range(8)]
                    assert {future.result().status_code for future in rest} == {503}
                    # VoraReadinessFailing's description sends the operator to this answer's message.
                    assert rest[-1].result().json()["message"].startswith("Redis does not answer")
                    assert {future.result() for future in sockets} == {503}
                    assert live.result().status_code == 204  # the runbook: liveness stays 204 through it all

            alerts = await_alerts(
                prometheus,
                {"VoraRedisUnavailable", "VoraRedisErrors", "VoraReadinessFailing", "VoraHandshakesRefused"},
                trouble,
            )
            lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    for alert in alerts.values():
        assert_actionable(alert)
    # The log lines the runbook sends the operator to, with the detail it says tells the causes apart.
    unavailable = [line for line in lines if line["msg"] == "redis unavailable"]
    assert unavailable
    assert any("Connection refused" in line["detail"] for line in unavailable)
    assert any(line["msg"] == "bus subscription lost" for line in lines)


def test_a_gateway_refusing_pushes_raises_the_push_failure_alert(
    env: dict[str, str], tmp_path: Path, make_token: TokenFactory, redisdb: redis.Redis
) -> None:
    """When the push gateway refuses every push of a held-up call, VoraPushFailures goes pending."""
    with WebhookReceiver(GATEWAY_SECRET) as gateway:
        settings = {
            **env,
            "VORA_SERVER_API_KEYS": SERVER_KEY,
            "VORA_PUSH_GATEWAY_URL": gateway.url,
            "VORA_PUSH_SECRET": GATEWAY_SECRET,
            "VORA_PUSH_MAX_ATTEMPTS": "1",
            "VORA_PUSH_RATE_LIMIT": "1000",
        }
        with watched(settings, tmp_path) as (server, prometheus):
            redisdb.sadd(keys.user_identities(USER), IDENTITY)
            setup = requests.post(
                f"{server.base_url}/identity/setup",
                json={"connectionType": "WebSocket", "identity": IDENTITY, "holdUpMode": True, "push": DEVICE},
                headers={"Authorization": f"Bearer {make_token(USER)}"},
                timeout=5,
            )
            assert setup.status_code == 200, setup.text
            calls = iter(range(1_000))

            def trouble() -> None:
                gateway.plan(400)
                response = requests.post(
                    f"{server.server_api_url}/identities/{IDENTITY}/events",
                    json={
                        "type": "callRinging",
                        "data": {"callId": f"call-{next(calls)}", "direction": "inbound", "from": "+1", "to": "2"},
                    },
                    headers={"Authorization": f"Bearer {SERVER_KEY}"},
                    timeout=10,
                )
                assert response.status_code == 200, response.text

            alerts = await_alerts(prometheus, {"VoraPushFailures"}, trouble)
    assert gateway.attempts_for(lambda received: True)
    assert_actionable(alerts["VoraPushFailures"])


def test_sockets_near_the_open_files_limit_raise_the_file_descriptor_alert(
    env: dict[str, str], tmp_path: Path, make_token: TokenFactory, redisdb: redis.Redis
) -> None:
    """A worker whose sockets fill 80 % of its open-files limit raises VoraFileDescriptorsNearLimit."""
    settings = {**env, "VORA_WS_MAX_SOCKETS_PER_SESSION": "1000"}
    with watched(settings, tmp_path, open_files=OPEN_FILES) as (server, prometheus), contextlib.ExitStack() as opened:
        open_sockets(server, setup_token(server, make_token, redisdb), SOCKETS_NEAR_FILE_LIMIT, opened)
        alerts = await_alerts(prometheus, {"VoraFileDescriptorsNearLimit"}, lambda: None)
    assert_actionable(alerts["VoraFileDescriptorsNearLimit"])


def test_idle_sockets_past_worker_connections_raise_no_alert(
    env: dict[str, str], tmp_path: Path, make_token: TokenFactory, redisdb: redis.Redis
) -> None:
    """Idle sockets take no worker_connections slot: twice the limit is served, and no alert claims otherwise."""
    settings = {**env, "VORA_WORKER_CONNECTIONS": "4", "VORA_WS_MAX_SOCKETS_PER_SESSION": "100"}
    with watched(settings, tmp_path) as (server, prometheus), contextlib.ExitStack() as opened:
        token = setup_token(server, make_token, redisdb)
        open_sockets(server, token, 8, opened)
        # Served on: the limit is not reached. Each scrape shows the 8 sockets on one worker whose limit is 4.
        assert setup_token(server, make_token, redisdb)
        wait_for(
            lambda: prometheus.query('sum(vora_open_connections{job="vora"})')[0]["value"][1] == "8",
            30,
            what="the sockets on the metrics port",
        )
        # Five evaluations of every rule (one a second) with the sockets scraped: none may go pending.
        until = server_time(prometheus) + 5
        quiet: list[dict[str, Any]] = []

        def evaluated_quietly() -> bool:
            quiet.append(active(prometheus))
            return server_time(prometheus) > until

        wait_for(evaluated_quietly, 15, what="five evaluations")
        assert [alerts for alerts in quiet if alerts] == []
