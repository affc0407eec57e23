"""Tests of the stream store's publish path with and without waiting for replicas (Redis WAIT)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from testbed.redis_procs import RedisServer
from testbed.wait import wait_for
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import EventCatalog, EventPublisher
from vora.store import keys
from vora.store.streams import NotReplicated, StreamStore

IDENTITY = "942788701"
DATA = '{"status":"busy"}'


@pytest.fixture
def master() -> Iterator[RedisServer]:
    """Run a standalone master that a test can give a replica."""
    with RedisServer(extra_args=["--repl-diskless-sync-delay", "0"]) as server:
        yield server


@pytest.fixture
def replica(master: RedisServer) -> Iterator[RedisServer]:
    """Run a replica of the master and wait until it is in sync."""
    with RedisServer(extra_args=["--replicaof", master.host, str(master.port)]) as server:
        wait_for(
            lambda: server.info("replication").get("master_link_status") == "up",
            15,
            what="the replica to sync",
        )
        yield server


def _wait_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any


@pytest.mark.topology
def test_publish_returns_once_the_replica_has_the_event(master: RedisServer, replica: RedisServer) -> None:
    """With one replica asked for, append returns only after the replica holds the event."""
    client = master.client()
    store = StreamStore(client, max_length=1000, max_age_seconds=3600, min_replicas=1, replica_timeout_ms=1500)
    event_id, sequence = store.append(IDENTITY, "presence", "2026-01-01T00:00:00.000Z", DATA)
    on_replica = replica.client().xrange(keys.event_stream(IDENTITY))
    assert [entry_id for entry_id, _ in on_replica] == [event_id]  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any
    assert sequence == 1
    assert _wait_calls(client) == 1


@pytest.mark.topology
def test_publish_unconfirmed_by_a_stopped_replica_raises_and_keeps_the_event(
    master: RedisServer, replica: RedisServer
) -> None:
    """With the replica stopped, append raises NotReplicated after the timeout; the event stays on the master."""
    replica.stop()
    client = master.client()
    store = StreamStore(client, max_length=1000, max_age_seconds=3600, min_replicas=1, replica_timeout_ms=100)
    with pytest.raises(NotReplicated) as raised:
        store.append(IDENTITY, "presence", "2026-01-01T00:00:00.000Z", DATA)
    assert raised.value.acknowledged == 0
    assert raised.value.wanted == 1
    assert raised.value.sequence_number == 1
    assert [entry_id for entry_id, _ in client.xrange(keys.event_stream(IDENTITY))] == [raised.value.event_id]  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any
    assert client.get(keys.event_sequence(IDENTITY)) == "1"


def test_publish_sends_no_wait_when_no_replica_is_asked_for(redisdb: redis.Redis) -> None:
    """With min_replicas 0 (the default), a publish is the script alone."""
    store = StreamStore(redisdb, max_length=1000, max_age_seconds=3600)
    waits_before = _wait_calls(redisdb)  # the session's Redis counts every earlier test's WAITs too
    store.append(IDENTITY, "presence", "2026-01-01T00:00:00.000Z", DATA)
    assert redisdb.xlen(keys.event_stream(IDENTITY)) == 1
    assert _wait_calls(redisdb) == waits_before


def test_unconfirmed_publish_still_queues_the_push_wake_up(redisdb: redis.Redis) -> None:
    """An inbound call that no replica confirmed raises NotReplicated, and its push job is queued all the same."""
    publisher = EventPublisher(
        EventCatalog(DEFAULT_SPEC_DIR),
        StreamStore(redisdb, max_length=1000, max_age_seconds=3600, min_replicas=1, replica_timeout_ms=50),
    )
    with pytest.raises(NotReplicated) as raised:
        publisher.publish(IDENTITY, "callRinging", {"callId": "c-1", "direction": "inbound", "from": "+34602128708"})
    [(_, job)] = redisdb.xrange(keys.PUSH_JOBS)  # type: ignore[misc] # redis-py types sync replies as Awaitable | Any
    assert job[b"eventId"].decode() == raised.value.event_id
    assert job[b"kind"] == b"ring"
