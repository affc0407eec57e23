"""Tests of the Origin check before the upgrade: no Origin and VORA's own origin pass, others only if listed."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import websocket

from testbed.vora_server import RunningServer
from tests.harness.ws_server import ServerFactory
from vora.ws.endpoint import origin_allowed

Setup = Callable[..., str]
FOREIGN = "http://evil.example"


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        ("http://127.0.0.1:18085", "127.0.0.1:18085", (), True),
        ("https://vora.example.com", "vora.example.com", (), True),
        ("https://VORA.example.com", "vora.example.com", (), True),
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
    """Same origin (by name when the proxy drops the port), a listed origin or '*' pass; anything else fails."""
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
