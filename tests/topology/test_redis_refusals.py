"""VORA on a Redis that answers but refuses commands for now: full (maxmemory, noeviction) or busy running a script."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
import websocket

from testbed.vora_server import RunningServer, running_server
from tests.harness import RedisCluster3, RedisServer
from tests.harness.journey import Api, Entry, readiness
from tests.harness.redis_busy import busy_with_a_script
from tests.harness.server_api import SERVER_KEY, ServerApiClient, assert_error_shape
from tests.harness.tokens import TokenFactory
from tests.harness.topology import EnvFactory
from tests.harness.ws_client import EventStreamRefused, open_client, open_event_stream
from vora.store import keys
from vora.store.client import connect
from vora.store.directory import Directory

pytestmark = [pytest.mark.topology, pytest.mark.slow]

USER = "erin"
IDENTITY = "910333000"
OTHER = "910333001"
PRESENCE = {"type": "presence", "data": {"status": "busy"}}
FULL = "Redis is full"


@dataclass
class Stack:
    """One Redis, one VORA server with a server API on it, a user with two identities, and its clients."""

    redis_server: RedisServer
    server: RunningServer
    client: redis.Redis
    api: Api
    server_api: ServerApiClient

    def batch(self) -> requests.Response:
        """Publish one presence event to each identity in one batch."""
        return self.server_api.batch([{"identity": identity, **PRESENCE} for identity in (IDENTITY, OTHER)])

    def lengths(self) -> tuple[int, int]:
        """Count the events retained for both identities."""
        return tuple(int(self.client.xlen(keys.event_stream(i))) for i in (IDENTITY, OTHER))  # type: ignore[return-value,arg-type] # redis-py types sync replies as Awaitable | Any


@contextlib.contextmanager
def stack(make_env: EnvFactory, make_token: TokenFactory, log_dir: Path, **settings: str) -> Iterator[Stack]:
    """Start a Redis and a VORA server with a server API on it, and stop both whatever happens."""
    with (
        RedisServer() as redis_server,
        running_server(make_env(redis_server.url, server_api_keys=SERVER_KEY, **settings), log_dir) as server,
        contextlib.closing(connect(redis_server.url, timeout=5.0)) as client,
    ):
        Directory(client).add(USER, [IDENTITY, OTHER])
        server_api = ServerApiClient(server)
        try:
            yield Stack(redis_server, server, client, Api(Entry.of(server), make_token(USER)), server_api)
        finally:
            server_api.session.close()


def assert_refused(response: requests.Response, words: str, retry_after: str) -> None:
    """Check a 503 in the error shape whose message names why Redis refused, with its Retry-After."""
    body = assert_error_shape(response, 503)
    assert words in body["message"], body
    assert response.headers.get("Retry-After") == retry_after, response.headers


def assert_live_promptly(server: RunningServer) -> None:
    """Check that liveness answers 204 within half a second (the worker is not held)."""
    started = time.monotonic()
    response = requests.get(f"{server.base_url}/health/liveness", timeout=2)
    assert response.status_code == 204
    assert time.monotonic() - started < 0.5


def handshake_status(server: RunningServer, token: str) -> tuple[int, bytes]:
    """Open a WebSocket with a token and return the refusal's status and body (101 when it opened)."""
    try:
        open_client(server.ws_url, token).close()
    except websocket.WebSocketBadStatusException as refused:
        return refused.status_code, refused.resp_body or b""
    return 101, b""


def event_stream_status(server: RunningServer, token: str) -> tuple[int, bytes]:
    """Open the event stream with a token and return the refusal's status and body (200 when it opened)."""
    try:
        open_event_stream(server.base_url, token).close()
    except EventStreamRefused as refused:
        return refused.status_code, refused.body
    return 200, b""


def test_a_full_redis_answers_503_saying_so_writes_nothing_and_recovers_without_restart(
    make_env: EnvFactory, make_token: TokenFactory, tmp_path: Path
) -> None:
    """With Redis over maxmemory every write is a 503 naming it, nothing is half written, reads and logout go on."""
    with stack(make_env, make_token, tmp_path) as s:
        token, other_token = s.api.setup(IDENTITY), s.api.setup(OTHER)
        assert s.server_api.publish(IDENTITY, PRESENCE).status_code == 200  # the publish scripts are loaded
        assert s.server_api.publish(IDENTITY, {**PRESENCE, "idempotencyKey": "warm"}).status_code == 200
        sessions = s.client.zcard(keys.sessions_index(IDENTITY))
        s.client.config_set("maxmemory", 1)  # over the limit from now on; the default policy evicts nothing
        try:
            assert s.api.identities().json() == {"identities": [IDENTITY, OTHER]}  # reads go on
            assert_refused(s.api.try_setup(IDENTITY), FULL, "10")
            assert_refused(s.api.try_subscribe(IDENTITY, ["presence"]), FULL, "10")
            assert_refused(s.server_api.publish(IDENTITY, PRESENCE), FULL, "10")
            keyed = s.server_api.publish(IDENTITY, {**PRESENCE, "idempotencyKey": "k1"})
            assert_refused(keyed, "the event was not published", "10")
            assert_refused(s.batch(), "no event of the batch was published", "10")
            for status, body in (handshake_status(s.server, token), event_stream_status(s.server, token)):
                assert status == 503, body
                assert FULL.encode() in body
            directory = s.server_api.request("PUT", "/users/frank/identities", json={"identities": ["910444000"]})
            assert_refused(directory, FULL, "10")
            assert_live_promptly(s.server)
            assert readiness(Entry.of(s.server)) == 204  # reads, logouts and open sockets still work
            assert s.lengths() == (2, 0)  # nothing published, not even half a batch
            assert s.client.zcard(keys.sessions_index(IDENTITY)) == sessions
            assert not s.client.exists(keys.idempotency(IDENTITY, "k1"))
            # Ending sessions frees memory, so Redis lets it through: logout still works.
            s.api.logout(OTHER)
        finally:
            s.client.config_set("maxmemory", 0)
        assert s.server_api.publish(IDENTITY, {**PRESENCE, "idempotencyKey": "k1"}).json()["duplicate"] is False
        assert handshake_status(s.server, s.api.setup(OTHER))[0] == 101
        assert handshake_status(s.server, other_token)[0] != 101  # logged out while Redis was full
        log = s.server.log()
        assert '"redis refused"' in log
        assert '"refusal": "OOM"' in log
        assert '"error": "NotWritten"' in log  # the publishes' 503s are logged too
        assert "Traceback" not in log
        assert '"unhandled error"' not in log


def test_a_redis_busy_running_a_script_answers_503_and_the_worker_stays_responsive(
    make_env: EnvFactory, make_token: TokenFactory, tmp_path: Path
) -> None:
    """While a script runs past Redis' time limit (BUSY), setup and publish are 503s and liveness answers at once."""
    with stack(make_env, make_token, tmp_path) as s:
        assert s.server_api.publish(IDENTITY, PRESENCE).status_code == 200
        with busy_with_a_script(s.redis_server, 5.0):
            assert_refused(s.api.try_setup(IDENTITY), "busy running a script", "1")
            assert_refused(s.server_api.publish(IDENTITY, PRESENCE), "busy running a script", "1")
            assert_refused(s.batch(), "busy running a script", "1")
            assert_live_promptly(s.server)
            probe = requests.get(f"{s.server.base_url}/health/readiness", timeout=5)
            assert "BUSY" in assert_error_shape(probe, 503)["message"]
        assert s.api.try_setup(IDENTITY).status_code == 200
        assert s.lengths() == (1, 0)
        assert "Traceback" not in s.server.log()


def test_a_logout_that_meets_a_slot_migration_is_a_503_and_succeeds_once_the_slot_has_moved(
    make_env: EnvFactory, make_token: TokenFactory, tmp_path: Path
) -> None:
    """A script that reaches a session hash already moved by resharding is a 503 (retry), not a 500; then it works."""
    with (
        RedisCluster3() as cluster,
        running_server(make_env(cluster.url), tmp_path) as server,
        contextlib.closing(connect(cluster.url, timeout=2.0)) as client,
    ):
        Directory(client).add(USER, [IDENTITY])
        api = Api(Entry.of(server), make_token(USER))
        api.setup(IDENTITY)
        api.setup(IDENTITY)
        index = keys.sessions_index(IDENTITY)
        first = client.zrange(index, 0, 0)[0].decode()  # type: ignore[index] # redis-py types sync replies as Awaitable | Any
        slot = client.keyslot(index)  # type: ignore[attr-defined] # the cluster client's own method
        source, target = _owner_and_other(cluster, slot)
        source_id, target_id = source.execute("CLUSTER", "MYID"), target.execute("CLUSTER", "MYID")
        target.execute("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.execute("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        # Resharding moves a slot's keys a few at a time: the first session's hash has gone, its index has not.
        assert source.execute("MIGRATE", target.host, target.port, keys.session(IDENTITY, first), 0, 5000) == "OK"

        assert_refused(api.try_logout(IDENTITY), "slot migration", "1")
        assert_live_promptly(server)
        assert source.execute("ZCARD", index) == 2  # nothing ended

        for key in source.execute("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source.execute("MIGRATE", target.host, target.port, key, 0, 5000)
        for node in cluster.nodes:
            node.execute("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        api.logout(IDENTITY)
        assert target.execute("EXISTS", index) == 0
        assert "Traceback" not in server.log()


def _owner_and_other(cluster: RedisCluster3, slot: int) -> tuple[RedisServer, RedisServer]:
    """Return the master that serves a slot and another master."""
    owners = [node for node in cluster.nodes if any(r[0] <= slot <= r[1] for r in _ranges(node))]
    (owner,) = owners
    return owner, next(node for node in cluster.nodes if node is not owner)


def _ranges(node: RedisServer) -> list[tuple[int, int]]:
    """Return the slot ranges a master serves, as CLUSTER MYSHARDID cannot tell: from CLUSTER NODES' myself line."""
    line = next(line for line in node.execute("CLUSTER", "NODES").splitlines() if "myself" in line)
    ranges = []
    for part in line.split()[8:]:
        if not part.startswith("["):
            low, _, high = part.partition("-")
            ranges.append((int(low), int(high or low)))
    return ranges
