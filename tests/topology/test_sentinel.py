"""VORA's Redis client and store behind three Sentinels, before and after a failover."""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest
import redis

from tests.harness import RedisSentinelSet, wait_for
from vora.store.client import connect, parse_redis_url
from vora.store.directory import Directory
from vora.store.sessions import NewSession, SessionStore

pytestmark = [pytest.mark.topology, pytest.mark.slow]

RECOVERY_TIMEOUT = 15.0
FAILOVER_TIMEOUT = 30.0


def test_sentinel_url_parses_to_sentinels_service_and_db(sentinel_set: RedisSentinelSet) -> None:
    """The harness's redis+sentinel:// URL names the three sentinels, the service and database 0."""
    target = parse_redis_url(sentinel_set.url)
    assert target.kind == "sentinel"
    assert target.hosts == tuple(s.address for s in sentinel_set.sentinels)
    assert (target.service, target.db) == ("vora", 0)


def test_client_follows_the_master_through_a_failover(fresh_sentinel_set: RedisSentinelSet) -> None:
    """The same client writes to the master, and after the master dies writes again to the promoted replica."""
    sentinel_set = fresh_sentinel_set
    client = connect(sentinel_set.url, timeout=2.0)
    with contextlib.closing(client):
        old_master = sentinel_set.master
        assert client.set("before", "1")
        assert client.wait(1, 2000) == 1  # the replica has it before the master dies
        assert old_master.execute("GET", "before") == "1"
        assert client.info("replication")["role"] == "master"  # type: ignore[index] # redis-py types sync replies as Awaitable | Any

        killed = sentinel_set.kill_master()
        promoted = sentinel_set.wait_for_failover(timeout=FAILOVER_TIMEOUT)
        assert promoted != killed
        assert promoted == sentinel_set.master.address

        started = time.monotonic()
        wait_for(
            lambda: client.set("after", "2"),
            RECOVERY_TIMEOUT,
            what="the client to write to the promoted master",
            ignore=(redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError),
        )
        recovered_in = time.monotonic() - started
        assert recovered_in < RECOVERY_TIMEOUT
        assert sentinel_set.master.execute("GET", "after") == "2"
        assert client.get("before") == b"1"
        assert client.info("replication")["role"] == "master"  # type: ignore[index] # redis-py types sync replies as Awaitable | Any


def test_readiness_probe_options_work_through_sentinels(sentinel_set: RedisSentinelSet) -> None:
    """The no-retry client the app builds for its readiness probe reaches the master through the sentinels."""
    probe = connect(sentinel_set.url, 1.0, retry=None, retry_on_error=[])
    with contextlib.closing(probe):
        assert probe.ping()
        assert probe.info("replication")["role"] == "master"  # type: ignore[index] # redis-py types sync replies as Awaitable | Any


def test_session_store_works_through_sentinels(sentinel_set: RedisSentinelSet) -> None:
    """The session scripts run on the master found through the sentinels."""
    client = connect(sentinel_set.url, timeout=2.0)
    with contextlib.closing(client):
        store = SessionStore(client, ttl_seconds=60, max_per_user=2)
        identity = f"49{uuid.uuid4().int % 10**9}"
        new = NewSession("bob", "WebSocket", False, frozenset(), "*")
        Directory(client).add("bob", [identity])
        assert store.create(identity=identity, session_id="s1", token_hash="h1", new=new).evicted == []
        stored = store.get(identity, "s1")
        assert stored is not None
        assert stored.subject == "bob"
        assert sentinel_set.master.execute("EXISTS", f"vora:{{{identity}}}:session:s1") == 1
