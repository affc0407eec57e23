"""OPTIONS over a real server and raw sockets: each path's automatic answer lists its methods in one fixed order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.vora_server import running_server
from tests.harness.raw_http import raw_exchange, upgrade_request

pytestmark = [pytest.mark.slow, pytest.mark.ws]

UPGRADE = [
    ("Host", "127.0.0.1"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
]
PLAIN = [("Host", "127.0.0.1")]


# werkzeug lists a rule's methods in a set's order, which follows the process's string hash seed: on CPython 3.11
# seed 1 gave HEAD, GET, OPTIONS (and OPTIONS, POST) and seed 7 OPTIONS, GET, HEAD, so each shows a process apart.
@pytest.mark.parametrize("seed", ["1", "7"])
def test_options_lists_allow_sorted_in_every_process(
    ws_env: dict[str, str], tmp_path: Path, setup_token: Callable[..., str], seed: str
) -> None:
    """The WebSocket's, the event stream's and a REST path's OPTIONS list Allow sorted, whatever the hash seed."""
    with running_server({**ws_env, "PYTHONHASHSEED": seed}, tmp_path) as server:
        token = setup_token(server)
        answers = {
            target: raw_exchange(server.port, upgrade_request(target, headers, "OPTIONS"))
            for target, headers in [
                (f"/vora/ws?token={token}", UPGRADE),
                ("/vora/sse", PLAIN),
                ("/vora/logout/910111000", PLAIN),
            ]
        }
    assert [(reply.status, reply.headers.get("allow")) for reply in answers.values()] == [
        (200, "GET, HEAD, OPTIONS"),
        (200, "GET, HEAD, OPTIONS"),
        (200, "OPTIONS, POST"),
    ]
