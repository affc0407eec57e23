"""Tests of the stream store's publish path: ids, the counter, retention, and waiting for replicas (Redis WAIT)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest
import redis

from testbed.redis_procs import RedisServer
from testbed.wait import wait_for
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import EventCatalog, EventPublisher
from vora.store import keys
from vora.store.streams import (
    EVENT_ID_SCHEMA_PATTERN,
    MAX_ID_PART,
    NotReplicated,
    StreamStore,
    decimal_at_most,
    parse_event_id,
)

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


def _redis_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()  # type: ignore[misc] # redis-py types sync replies as Awaitable | Any
    return int(seconds) * 1000 + int(micros) // 1000


def _command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any


def test_a_clock_behind_the_newest_entry_keeps_its_milliseconds(redisdb: redis.Redis) -> None:
    """When Redis' clock is behind the newest entry's milliseconds, the next id keeps them and counts on."""
    store = StreamStore(redisdb, max_length=1000, max_age_seconds=3600)
    ahead = _redis_ms(redisdb) + 3_600_000
    redisdb.xadd(keys.event_stream(IDENTITY), {"seq": "5"}, id=f"{ahead}-5")
    redisdb.set(keys.event_sequence(IDENTITY), 5)
    assert store.append(IDENTITY, "presence", "2026-01-01T00:00:00.000Z", DATA) == (f"{ahead}-6", 6)
    assert store.append(IDENTITY, "presence", "2026-01-01T00:00:00.000Z", DATA) == (f"{ahead}-7", 7)


def test_a_clock_behind_a_stream_emptied_of_entries_still_yields_a_larger_id(redisdb: redis.Redis) -> None:
    """An id is larger than the stream's last one even when that entry is gone and Redis' clock is behind it."""
    store = StreamStore(redisdb, max_length=1000, max_age_seconds=3600)
    ahead = _redis_ms(redisdb) + 3_600_000
    redisdb.xadd(keys.event_stream(IDENTITY), {"seq": "5"}, id=f"{ahead}-5")
    redisdb.xtrim(keys.event_stream(IDENTITY), maxlen=0)
    redisdb.set(keys.event_sequence(IDENTITY), 5)
    assert store.append(IDENTITY, "presence", "2026-01-01T00:00:00.000Z", DATA) == (f"{ahead}-6", 6)


def test_a_counter_written_by_an_earlier_version_is_continued_and_stays_an_integer(redisdb: redis.Redis) -> None:
    """A plain integer counter from live data numbers the next event, and stays a plain integer for every reader."""
    store = StreamStore(redisdb, max_length=1000, max_age_seconds=3600)
    redisdb.xadd(keys.event_stream(IDENTITY), {"seq": "41"}, id="1000-41")
    redisdb.set(keys.event_sequence(IDENTITY), "41")
    event_id, sequence = store.append(IDENTITY, "presence", "2026-01-01T00:00:00.000Z", DATA)
    assert sequence == 42
    assert event_id.endswith("-42")
    assert redisdb.get(keys.event_sequence(IDENTITY)) == b"42"
    assert redisdb.incr(keys.event_sequence(IDENTITY)) == 43  # what an instance still on the earlier version runs


def test_a_publish_runs_no_stream_read_and_trims_by_age_on_every_sixteenth_event(redisdb: redis.Redis) -> None:
    """A publish reads nothing back from the stream and trims by age only on every 16th sequence number."""
    store = StreamStore(redisdb, max_length=1000, max_age_seconds=3600)
    store.append(IDENTITY, "presence", "2026-01-01T00:00:00.000Z", DATA)  # loads the script
    before = _command_calls(redisdb)
    for _ in range(15):  # sequence numbers 2 to 16
        store.append(IDENTITY, "presence", "2026-01-01T00:00:00.000Z", DATA)
    after = _command_calls(redisdb)
    ran = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    del ran["info"]  # the INFO that took the first count
    assert ran == {"evalsha": 15, "incr": 15, "pexpire": 30, "time": 15, "xadd": 15, "xtrim": 1, "publish": 15}


def test_entries_past_the_max_age_are_trimmed_within_sixteen_publishes(redisdb: redis.Redis) -> None:
    """Whole stream nodes of entries older than the max age are gone after at most 16 more publishes."""
    store = StreamStore(redisdb, max_length=1000, max_age_seconds=3600)
    previous = redisdb.config_get("stream-node-max-entries")["stream-node-max-entries"]  # type: ignore[index] # redis-py types sync replies as Awaitable | Any
    redisdb.config_set("stream-node-max-entries", 10)
    try:
        aged = _redis_ms(redisdb) - 2 * 3_600_000
        for sequence in range(1, 201):  # 20 full nodes, every entry past the max age
            redisdb.xadd(keys.event_stream(IDENTITY), {"seq": str(sequence)}, id=f"{aged}-{sequence}")
        redisdb.set(keys.event_sequence(IDENTITY), 200)
        published = [store.append(IDENTITY, "presence", "2026-01-01T00:00:00.000Z", DATA)[0] for _ in range(16)]
    finally:
        redisdb.config_set("stream-node-max-entries", previous)
    retained = [entry_id.decode() for entry_id, _ in redisdb.xrange(keys.event_stream(IDENTITY))]  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any
    assert retained == published


@pytest.mark.parametrize("limit", [0, 1, 9, 10, 15, 100, 109, 1000, 5050, 20_999])
def test_decimal_at_most_matches_the_numbers_up_to_its_limit_and_no_more(limit: int) -> None:
    """The pattern takes every decimal of the limit's width or less up to the limit, leading zeros too, and no other."""
    pattern = re.compile(f"^{decimal_at_most(limit)}$")
    width = len(str(limit))
    for number in range(limit * 2 + 20):
        for spelled in {str(number), str(number).zfill(width), str(number).zfill(width + 1)}:
            assert bool(pattern.match(spelled)) == (len(spelled) <= width and number <= limit), spelled


def test_the_schema_pattern_takes_exactly_the_event_ids_vora_reads() -> None:
    """The documents' eventId pattern matches an id exactly when parse_event_id reads it (each part 2^64-1 at most)."""
    pattern = re.compile(EVENT_ID_SCHEMA_PATTERN)
    rng = random.Random(7)
    edges = [0, 1, 9, 10**19 - 1, 10**19, MAX_ID_PART - 1, MAX_ID_PART, MAX_ID_PART + 1, 10**20 - 1, 10**20]
    for _ in range(5_000):
        edges.append(rng.randrange(MAX_ID_PART - 10**6, MAX_ID_PART + 10**6))
        edges.append(rng.randrange(10 ** rng.randint(1, 21)))
    for millis in edges:
        for sequence in (0, rng.choice(edges)):
            for spelled in (f"{millis}-{sequence}", f"{str(millis).zfill(20)}-{sequence}"):
                assert bool(pattern.match(spelled)) == (parse_event_id(spelled) is not None), spelled
    for malformed in ("", "1", "1-", "-1", "1-2-3", "a-1", " 1-1", "1-1\n", "+1-1"):
        assert pattern.match(malformed) is None, malformed
        assert parse_event_id(malformed) is None, malformed
