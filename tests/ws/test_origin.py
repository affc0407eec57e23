"""Tests of the Origin check before the upgrade: no Origin and VORA's own origin pass, others only if listed."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import websocket

from tests.harness.vora_server import RunningServer
from tests.ws.conftest import ServerFactory
from vora.ws.endpoint import origin_allowed

Setup = Callable[..., str]
FOREIGN = "http://evil.example"


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        ("http://127.0.0.1:18085", "127.0.0.1:18085", (), True),
        ("http://localhost:18085", "LOCALHOST:18085", (), True),
        ("http://[::1]:18085", "[::1]:18085", (), True),
        ("http://localhost", "localhost", (), True),
        ("http://localhost:80", "localhost", (), True),
        # DNS rebinding: a page of evil.example, whose name resolves to VORA, is "same origin" by name only.
        ("http://evil.example:18085", "evil.example:18085", (), False),
        ("https://vora.example.com", "vora.example.com", (), False),
        ("https://vora.example.com", "vora.example.com", ("https://vora.example.com",), True),
        # A Host without a port is the scheme's default port, not any port.
        ("http://localhost:9999", "localhost", (), False),
        ("https://localhost:8443", "localhost", (), False),
        ("http://localhost:18085", "localhost:18085:1", (), False),
        ("http://user@localhost:18085", "localhost:18085", (), False),
        ("http://127.0.0.1:9999", "127.0.0.1:18085", (), False),
        (FOREIGN, "127.0.0.1:18085", (), False),
        (FOREIGN, "127.0.0.1:18085", ("https://evil.example",), False),
        (FOREIGN, "127.0.0.1:18085", (FOREIGN,), True),
        (FOREIGN, "127.0.0.1:18085", ("*",), True),
        ("null", "127.0.0.1:18085", (), False),
        ("file://", "127.0.0.1:18085", (), False),
    ],
)
def test_origin_allowed(origin: str, host: str, allowed: tuple[str, ...], expected: bool) -> None:
    """A listed origin or '*' passes, and the page's own origin on a loopback Host; anything else fails."""
    assert origin_allowed(origin, host, allowed) is expected


def open_with_origin(server: RunningServer, token: str, origin: str | None) -> websocket.WebSocket:
    """Open a socket sending this Origin header (or none at all)."""
    url = f"{server.ws_url}?token={token}"
    if origin is None:
        ws: websocket.WebSocket = websocket.create_connection(url, timeout=5, suppress_origin=True)
    else:
        ws = websocket.create_connection(url, timeout=5, origin=origin)
    return ws


@pytest.mark.slow
@pytest.mark.ws
def test_sockets_without_origin_or_from_vora_itself_open(server: RunningServer, setup_token: Setup) -> None:
    """A client that sends no Origin and a page served by VORA itself both get their socket."""
    token = setup_token(server)
    for origin in (None, f"http://127.0.0.1:{server.port}"):
        open_with_origin(server, token, origin).close()


@pytest.mark.slow
@pytest.mark.ws
def test_foreign_origin_is_refused_with_403_before_the_upgrade(server: RunningServer, setup_token: Setup) -> None:
    """A page from an origin VORA_CORS_ORIGINS does not list gets 403 in the error shape and no socket."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        open_with_origin(server, setup_token(server), FOREIGN)
    assert refused.value.status_code == 403
    body = json.loads(refused.value.resp_body or b"{}")
    assert body["status"] == "403"
    assert FOREIGN in body["message"]


@pytest.mark.slow
@pytest.mark.ws
def test_listed_origin_opens(make_server: ServerFactory, setup_token: Setup) -> None:
    """An origin listed in VORA_CORS_ORIGINS may open the socket."""
    with make_server(cors_origins=f"https://console.example,{FOREIGN}") as listed:
        open_with_origin(listed, setup_token(listed), FOREIGN).close()


@pytest.mark.slow
@pytest.mark.ws
@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example"])
def test_dns_rebinding_origin_is_refused(server: RunningServer, setup_token: Setup, host: str) -> None:
    """A page of evil.example whose name resolves to VORA (Origin and Host both evil.example) gets 403."""
    netloc = host.format(port=server.port)
    url = f"{server.ws_url}?token={setup_token(server)}"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=5, origin=f"http://{netloc}", host=netloc)
    assert refused.value.status_code == 403


@pytest.mark.slow
@pytest.mark.ws
def test_port_less_host_does_not_admit_any_port(server: RunningServer, setup_token: Setup) -> None:
    """Behind a proxy that drops the port from Host, a page on another port of the same name gets 403."""
    url = f"{server.ws_url}?token={setup_token(server)}"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=5, origin="http://localhost:9999", host="localhost")
    assert refused.value.status_code == 403
