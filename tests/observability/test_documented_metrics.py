"""docs/metrics.md's table and what a running instance exports on its metrics port are the same metrics and labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from testbed.vora_server import running_server
from testbed.wait import wait_for
from testbed.webhooks import WebhookReceiver
from tests.harness.metrics import sample
from tests.harness.prometheus import REPO
from tests.harness.server_api import SERVER_KEY
from tests.harness.tokens import TokenFactory
from tests.harness.ws_client import open_client, open_event_stream
from vora.store import keys

pytestmark = [pytest.mark.slow]

METRICS_DOC = REPO / "docs" / "metrics.md"
USER = "alice"
IDENTITY = "910555000"
GATEWAY_SECRET = "gateway-secret-" + "g" * 24
DEVICE = {"platform": "apns", "deviceToken": "f" * 64, "appId": "com.example.vora"}
PROMETHEUS_OWN = {"up"}  # documented because the rules read it, but Prometheus makes it, not VORA
ADDED_LABELS = {"le"}  # a histogram's bucket label, never a documented one


def documented() -> dict[str, set[str]]:
    """Return every metric of docs/metrics.md's table with its documented label names."""
    table: dict[str, set[str]] = {}
    for name, labels in re.findall(r"^\| `([a-z_]+)` \| [a-z]+ \| ([^|]+) \|", METRICS_DOC.read_text(), re.M):
        # A label's documented values are in parentheses after it: only the names outside them count.
        table[name] = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", labels)))
    return table


def exported(text: str) -> dict[str, set[str]]:
    """Return every metric family the text exposes (counters with _total, as documented) with its label names."""
    families: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        families[name] = {label for s in family.samples for label in s.labels} - ADDED_LABELS
    return families


def test_documentation_parser_reads_names_and_labels() -> None:
    """The table parser finds label names and skips the values listed in parentheses."""
    table = documented()
    assert table["vora_http_requests_total"] == {"operation", "method", "status"}
    assert table["vora_connection_closes_total"] == {"transport", "code"}
    assert table["vora_redis_up"] == set()
    assert len(table) > 40


def test_every_metric_exported_is_documented_with_its_labels(
    env: dict[str, str], tmp_path: Path, make_token: TokenFactory, redisdb: redis.Redis
) -> None:
    """With both listeners, a socket, an event stream, a publish and a push behind it, the two sets are equal."""
    with WebhookReceiver(GATEWAY_SECRET) as gateway:
        settings = {
            **env,
            "VORA_SERVER_API_KEYS": SERVER_KEY,
            "VORA_PUSH_GATEWAY_URL": gateway.url,
            "VORA_PUSH_SECRET": GATEWAY_SECRET,
        }
        with running_server(settings, tmp_path, workers=2) as server:
            redisdb.sadd(keys.user_identities(USER), IDENTITY)
            headers = {"Authorization": f"Bearer {make_token(USER)}"}
            tokens = []
            for hold_up in (False, False, True):
                body: dict[str, object] = {"connectionType": "WebSocket", "identity": IDENTITY, "holdUpMode": hold_up}
                if hold_up:
                    body["push"] = DEVICE
                setup = requests.post(f"{server.base_url}/identity/setup", json=body, headers=headers, timeout=5)
                assert setup.status_code == 200, setup.text
                tokens.append(setup.json()["webSocketToken"])
            socket = open_client(server.ws_url, tokens[0])
            stream = open_event_stream(server.base_url, tokens[1])
            published = requests.post(
                f"{server.server_api_url}/identities/{IDENTITY}/events",
                json={"type": "callRinging", "data": {"callId": "c", "direction": "inbound", "from": "+1", "to": "2"}},
                headers={"Authorization": f"Bearer {SERVER_KEY}"},
                timeout=10,
            )
            assert published.status_code == 200, published.text
            assert socket.next()["type"] == "callRinging"
            assert stream.next()["type"] == "callRinging"
            gateway.next_accepted()  # the held-up session's device was pushed
            socket.close()
            stream.close()

            def pushed() -> str | None:
                scraped = requests.get(server.metrics_url, timeout=5).text
                return scraped if sample(scraped, "vora_push_sent_total") == 1 else None

            text = wait_for(pushed, 10, what="the push on the metrics port")
    assert sample(text, "vora_http_requests_total", operation="publishEvent", method="POST", status="200") == 1
    table, live = documented(), exported(text)
    assert {name: labels for name, labels in live.items() if table.get(name) != labels} == {}
    assert set(table) - set(live) - PROMETHEUS_OWN == set()
