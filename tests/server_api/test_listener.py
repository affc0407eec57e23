"""Tests of the server API's own listener and its key: routing by the listening socket, 401s, Swagger UI."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
import requests

from testbed.ports import free_port
from testbed.vora_server import RunningServer, running_server
from testbed.wait import port_accepts, wait_for
from tests.harness.server_api import IDENTITY, ROTATED_KEY, SERVER_KEY, ServerApiClient, assert_error_shape
from tests.harness.tokens import TokenFactory

pytestmark = [pytest.mark.slow, pytest.mark.server_api]


def test_public_port_does_not_serve_the_server_api(server: RunningServer, redisdb: redis.Redis) -> None:
    """A server API path on the public port is a 404 in the error shape, even with a valid key."""
    response = requests.get(
        f"http://127.0.0.1:{server.port}/vora/server/v1/identities/{IDENTITY}/online",
        headers={"Authorization": f"Bearer {SERVER_KEY}"},
        timeout=5,
    )
    assert_error_shape(response, 404)


def test_server_port_does_not_serve_the_public_api(server: RunningServer, make_token: TokenFactory) -> None:
    """Public paths (the REST API, health, the WebSocket) on the server API port are 404s in the error shape."""
    base = f"http://127.0.0.1:{server.server_api_port}/vora"
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    for path in ("/identity", "/health/liveness", "/ws"):
        assert_error_shape(requests.get(base + path, headers=headers, timeout=5), 404)


def test_host_header_does_not_choose_the_api(server: RunningServer, redisdb: redis.Redis) -> None:
    """A Host header naming the server API port does not open the server API on the public listener."""
    response = requests.get(
        f"http://127.0.0.1:{server.port}/vora/server/v1/identities/{IDENTITY}/online",
        headers={"Authorization": f"Bearer {SERVER_KEY}", "Host": f"127.0.0.1:{server.server_api_port}"},
        timeout=5,
    )
    assert_error_shape(response, 404)


def test_every_configured_key_is_accepted(server: RunningServer, redisdb: redis.Redis) -> None:
    """Both configured keys work, so a backend can move to the next key before the old one is removed."""
    for key in (SERVER_KEY, ROTATED_KEY):
        response = ServerApiClient(server, key).request("GET", f"/identities/{IDENTITY}/online")
        assert response.status_code == 200, response.text
        assert response.json() == {"identity": IDENTITY, "online": False, "sockets": 0}


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "A server API key is required"),
        ("Basic c3J2OmtleQ==", "A server API key is required"),
        ("Bearer", "The Authorization header must be 'Bearer <server API key>'"),
        (f"Bearer {SERVER_KEY}x", "not one this server is configured with"),
        (f"Bearer {SERVER_KEY[:-1]}", "not one this server is configured with"),
    ],
)
def test_missing_or_wrong_key_is_401(
    server: RunningServer, redisdb: redis.Redis, authorization: str | None, message: str
) -> None:
    """No key, another scheme, a malformed header or a wrong key is a 401 with a challenge, and publishes nothing."""
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.post(
        f"{server.server_api_url}/identities/{IDENTITY}/events",
        json={"type": "presence", "data": {"status": "busy"}},
        headers=headers,
        timeout=5,
    )
    body = assert_error_shape(response, 401)
    assert message in body["message"]
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="vora"')
    assert redisdb.dbsize() == 0


def test_access_token_is_not_a_server_key(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis
) -> None:
    """A valid public access token (a JWT) gets 401 on the server API, and the server log does not show it."""
    token = make_token("alice")
    response = ServerApiClient(server, token).request("GET", f"/identities/{IDENTITY}/sessions")
    body = assert_error_shape(response, 401)
    assert body["message"] == "An access token is not a server API key"
    assert token not in server.log()
    assert SERVER_KEY not in server.log()


def test_swagger_ui_and_document_are_served_on_the_server_port(server: RunningServer) -> None:
    """The server API's Swagger UI and OpenAPI document are at its own /ui/ and /openapi.json."""
    ui = requests.get(f"{server.server_api_url}/ui/", timeout=5)
    assert ui.status_code == 200
    assert "swagger" in ui.text.lower()
    document = requests.get(f"{server.server_api_url}/openapi.json", timeout=5).json()
    assert document["info"]["title"] == "VORA Server API"
    public_ui = requests.get(f"http://127.0.0.1:{server.port}/vora/server/v1/ui/", timeout=5)
    assert public_ui.status_code == 404


def test_without_a_key_the_server_api_does_not_listen(ws_env: dict[str, str], tmp_path: Path) -> None:
    """A server with no server API key configured binds only its public port."""
    with running_server(ws_env, tmp_path) as plain:
        assert port_accepts(plain.port)
        assert not port_accepts(plain.server_api_port)


def test_server_api_port_may_not_be_a_public_port(api_env: dict[str, str], tmp_path: Path) -> None:
    """Routing is by listening port, so a server API port equal to the public one stops the server at start."""
    port = free_port()
    with (
        pytest.raises(RuntimeError, match="exited"),
        running_server({**api_env, "VORA_SERVER_API_PORT": str(port)}, tmp_path, port=port),
    ):
        pass
    assert "is also a public --bind port" in (tmp_path / f"server-{port}.log").read_text()


def every_worker_answers(server: RunningServer, key: str, status: int) -> bool:
    """Tell whether 12 requests, each on a new connection (so spread over the workers), all get status."""
    headers = {"Authorization": f"Bearer {key}"}
    return all(
        requests.get(f"{server.server_api_url}/directory", headers=headers, timeout=5).status_code == status
        for _ in range(12)
    )


def test_rotating_the_key_file_takes_effect_on_every_worker_without_a_restart(
    ws_env: dict[str, str], tmp_path: Path, redisdb: redis.Redis
) -> None:
    """A key line added is taken by every worker, one removed is dropped, and a vanished key file keeps the keys."""
    key_file = tmp_path / "keys"
    key_file.write_text(f"# the current key\n{SERVER_KEY}\n")
    env = {**ws_env, "VORA_SERVER_API_KEYS_FILE": str(key_file)}
    with running_server(env, tmp_path, workers=2) as served:
        assert every_worker_answers(served, SERVER_KEY, 200)
        assert every_worker_answers(served, ROTATED_KEY, 401)
        key_file.write_text(f"{SERVER_KEY}\n{ROTATED_KEY}\n")
        # "Within a second every worker accepts both": a few seconds' bound for a busy machine.
        wait_for(lambda: every_worker_answers(served, ROTATED_KEY, 200), 5, what="every worker to take the new key")
        assert every_worker_answers(served, SERVER_KEY, 200)
        key_file.write_text(f"{ROTATED_KEY}\n")
        wait_for(lambda: every_worker_answers(served, SERVER_KEY, 401), 5, what="every worker to drop the old key")
        # A Secret being replaced, or a file moved away: the keys last read stay.
        key_file.unlink()
        time.sleep(1.5)  # past the once-a-second look at the file: nothing to await, it must not change
        assert every_worker_answers(served, ROTATED_KEY, 200)
