"""nginx in front of two upstreams: round-robin, skipping a dead upstream, WebSocket upgrades, clean logs."""

from __future__ import annotations

import json

import pytest

from tests.harness import Nginx, wait_for
from tests.harness.upstreams import UPSTREAM_HEADER, Upstream, http_get, upgrade_and_echo

pytestmark = [pytest.mark.topology, pytest.mark.slow]


def _served_by(nginx: Nginx, count: int, path: str = "/hello") -> list[str]:
    served = []
    for _ in range(count):
        status, headers, body = http_get(nginx.listen_port, path)
        assert status == 200, body
        assert json.loads(body)["upstream"] == headers[UPSTREAM_HEADER.lower()]
        served.append(headers[UPSTREAM_HEADER.lower()])
    return served


def test_requests_alternate_between_upstreams(nginx: Nginx) -> None:
    """Consecutive requests go round-robin to both upstreams, with no stickiness."""
    served = _served_by(nginx, 8)
    assert set(served) == {"a", "b"}
    assert all(served[i] != served[i + 1] for i in range(len(served) - 1)), served


def test_a_killed_upstream_is_skipped(nginx: Nginx, upstreams: tuple[Upstream, Upstream]) -> None:
    """Once one upstream refuses connections, every request is still answered, by the other."""
    first, second = upstreams
    second.stop()
    assert _served_by(nginx, 6) == ["a"] * 6
    assert len(first.requests) == 6


def test_websocket_upgrade_is_tunnelled(nginx: Nginx, upstreams: tuple[Upstream, Upstream]) -> None:
    """An Upgrade request reaches the upstream with its Upgrade headers and the socket is then relayed both ways."""
    head, echoed = upgrade_and_echo(nginx.listen_port, "/ws", b"ping through nginx")
    assert head.startswith("HTTP/1.1 101"), head
    assert echoed == b"ping through nginx"
    (request,) = [r for u in upstreams for r in u.requests]
    assert request["upgrade"] == "websocket"
    assert request["connection"].lower() == "upgrade"


def test_access_log_keeps_paths_but_not_query_strings(nginx: Nginx) -> None:
    """The access log records the path and the upstream but never the query string that may carry a token."""
    status, _, _ = http_get(nginx.listen_port, "/events/stream?token=very-secret-token")
    assert status == 200
    lines = wait_for(nginx.access_log_lines, 5.0, what="nginx to write its access log line")
    assert len(lines) == 1
    assert "/events/stream" in lines[0]
    assert "upstream=127.0.0.1:" in lines[0]
    assert "very-secret-token" not in lines[0]
    assert "token=" not in nginx.access_log.read_text()
