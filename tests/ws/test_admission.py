"""The handshake bound on a real server: past VORA_WS_MAX_PENDING_HANDSHAKES a worker refuses at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
import websocket

from testbed.wait import wait_for
from tests.harness.ws_client import Client, assert_error_shape, handshake_headers
from tests.harness.ws_server import ServerFactory
from vora.store import keys

pytestmark = [pytest.mark.slow, pytest.mark.ws]

Connect = Callable[..., Client]
Setup = Callable[..., str]

REFUSED_IDENTITY = "910111077"
PAUSE_MS = 8_000


def admissions_held_by_the_pause(redisdb: redis.Redis) -> int:
    """Count the clients whose admission script waits for a write-paused Redis."""
    clients: list[dict[str, str]] = redisdb.client_list()  # type: ignore[assignment] # redis-py types sync replies as Awaitable | Any
    return len([c for c in clients if c["cmd"] == "evalsha" and "b" in c["flags"]])


@pytest.fixture
def write_paused(redisdb: redis.Redis) -> Iterator[Callable[[], None]]:
    """Yield a function that pauses Redis' writes for PAUSE_MS (reads go on); unpause after the test."""
    yield lambda: redisdb.execute_command("CLIENT", "PAUSE", str(PAUSE_MS), "WRITE")
    redisdb.execute_command("CLIENT", "UNPAUSE")


def test_handshakes_past_the_bound_get_503_at_once_and_write_nothing(
    make_server: ServerFactory,
    setup_token: Setup,
    connect: Connect,
    redisdb: redis.Redis,
    write_paused: Callable[[], None],
) -> None:
    """With 2 handshakes (the bound) held by a slow Redis, a third gets 503 + Retry-After at once, not attached."""
    with make_server(ws_max_pending_handshakes="2", redis_timeout="20") as server:
        held_token = setup_token(server)
        refused_token = setup_token(server, subject="bob", identity=REFUSED_IDENTITY)
        connect(server, held_token).close()  # the worker's subscription is up and the admission script loaded
        write_paused()
        with ThreadPoolExecutor(2) as pool:
            held = [
                pool.submit(websocket.create_connection, f"{server.ws_url}?token={held_token}", timeout=30)
                for _ in range(2)
            ]
            wait_for(lambda: admissions_held_by_the_pause(redisdb) == 2, 10, what="two admissions waiting on Redis")
            started = time.monotonic()
            response = requests.get(
                f"{server.base_url}/ws",
                params={"token": refused_token},
                headers=handshake_headers(),
                timeout=PAUSE_MS / 1000,
            )
            answered_in = time.monotonic() - started
            body = assert_error_shape(response, 503)
            assert response.headers["Retry-After"] == "1"
            assert "too many WebSocket handshakes" in body["message"]
            assert answered_in < 1.0  # the pause lasts 8 s: the refusal did not wait for Redis
            redisdb.execute_command("CLIENT", "UNPAUSE")
            sockets = [future.result(timeout=30) for future in held]
        assert all(ws.connected for ws in sockets)
        for ws in sockets:
            ws.close()
        assert not redisdb.exists(keys.socket_presence(REFUSED_IDENTITY))
        [session_id] = redisdb.zrange(keys.sessions_index(REFUSED_IDENTITY), 0, -1)  # type: ignore[misc] # redis-py types sync replies as Awaitable | Any
        assert not redisdb.hexists(keys.session(REFUSED_IDENTITY, session_id.decode()), "attachedAt")
        shed = requests.get(server.metrics_url, timeout=5).text
        assert "vora_ws_handshakes_shed_total 1.0" in shed


@pytest.mark.parametrize(("method", "status"), [("OPTIONS", 200), ("POST", 405), ("PUT", 405)])
def test_a_method_the_route_does_not_upgrade_admits_nothing(
    make_server: ServerFactory, setup_token: Setup, redisdb: redis.Redis, method: str, status: int
) -> None:
    """OPTIONS or POST with a sound handshake and token gets its answer, and the session stays as setup left it."""
    with make_server() as server:
        token = setup_token(server, subject="bob", identity=REFUSED_IDENTITY)
        response = requests.request(
            method, f"{server.base_url}/ws", params={"token": token}, headers=handshake_headers(), timeout=10
        )
        assert response.status_code == status, response.text
        if status == 405:
            assert_error_shape(response, 405)
        [session_id] = redisdb.zrange(keys.sessions_index(REFUSED_IDENTITY), 0, -1)  # type: ignore[misc] # redis-py types sync replies as Awaitable | Any
        assert not redisdb.hexists(keys.session(REFUSED_IDENTITY, session_id.decode()), "attachedAt")
        assert not redisdb.exists(keys.socket_presence(REFUSED_IDENTITY))
