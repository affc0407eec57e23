"""The publisher: a stored event is reported stored even when its push wake-up cannot be queued at once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis
from prometheus_client import REGISTRY

from testbed.wait import wait_for
from tests.harness import RedisServer
from tests.harness.processes import frozen
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import EventCatalog, EventPublisher
from vora.store import keys
from vora.store.client import connect
from vora.store.push import PushStore
from vora.store.streams import Appended, StreamStore

pytestmark = [pytest.mark.slow]

IDENTITY = "910555000"
RINGING = {"callId": "c-1", "direction": "inbound", "from": "602128708"}


@pytest.fixture
def two_redis() -> Iterator[tuple[redis.Redis, RedisServer, redis.Redis]]:
    """Yield a client of the streams' Redis, and the push queue's Redis (as on Cluster, another node) with a client."""
    with (
        RedisServer() as streams_server,
        RedisServer() as push_server,
        contextlib.closing(connect(streams_server.url, timeout=1.0)) as streams_client,
        contextlib.closing(connect(push_server.url, timeout=1.0)) as push_client,
    ):
        yield streams_client, push_server, push_client


def test_a_wake_up_that_cannot_be_queued_does_not_fail_its_stored_publish_and_is_queued_later(
    two_redis: tuple[redis.Redis, RedisServer, redis.Redis],
) -> None:
    """An inbound callRinging stored while the push queue's Redis is down is reported published; its job follows."""
    streams_client, push_server, push_client = two_redis
    streams = StreamStore(streams_client, max_length=1000, max_age_seconds=3600)
    publisher = EventPublisher(EventCatalog(DEFAULT_SPEC_DIR), streams, PushStore(push_client))
    failed_before = _push_failures()
    push_server.stop()
    published = [
        publisher.publish(IDENTITY, "callRinging", {**RINGING, "callId": f"c-{n}"})  # raised the ConnectionError
        for n in range(5)
    ]
    assert [event.sequence_number for event in published] == [1, 2, 3, 4, 5]
    assert streams_client.xlen(keys.event_stream(IDENTITY)) == 5
    assert _push_failures() > failed_before  # the operator sees it: vora_redis_errors_total{where="push"}
    # One retrier for them all, not a thread (a greenlet in a worker) per publish.
    assert [t.name for t in threading.enumerate()].count("vora-wake-up-retry") == 1
    push_server.start()
    wait_for(lambda: push_client.xlen(keys.PUSH_JOBS) == 5, 10.0, what="the wake-up jobs to be queued")
    jobs = [job for _, job in push_client.xrange(keys.PUSH_JOBS)]  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any
    assert {job[b"kind"] for job in jobs} == {b"ring"}
    assert [job[b"eventId"] for job in jobs] == [event.event_id.encode() for event in published]
    wait_for(
        lambda: "vora-wake-up-retry" not in [t.name for t in threading.enumerate()], 5.0, what="the retrier to end"
    )


def test_a_batch_whose_wake_ups_cannot_be_queued_pays_for_one_failure_and_queues_them_all_later(
    two_redis: tuple[redis.Redis, RedisServer, redis.Redis],
) -> None:
    """A batch of ringing calls stored while the push queue hangs waits for one enqueue; each job follows once."""
    streams_client, push_server, push_client = two_redis
    streams = StreamStore(streams_client, max_length=1000, max_age_seconds=3600)
    publisher = EventPublisher(EventCatalog(DEFAULT_SPEC_DIR), streams, PushStore(push_client))
    calls = [{**RINGING, "callId": f"c-{n}"} for n in range(20)]
    events = [
        (replace(publisher.checked(IDENTITY, "callRinging", data), idempotency_key=data["callId"]), data)
        for data in calls
    ]
    assert push_client.ping()  # the connection is open before Redis stops answering on it
    with frozen(push_server.pid):
        started = time.monotonic()
        results = publisher.publish_many(events, 60_000)
        # Each enqueue waited out the client's 1 s timeout: twenty of them held the request for 20 s.
        assert time.monotonic() - started < 3.0
    assert [r.sequence_number for r in results if isinstance(r, Appended)] == list(range(1, 21))
    wait_for(lambda: push_client.xlen(keys.PUSH_JOBS) == 20, 15.0, what="every wake-up job to be queued")
    assert push_client.xlen(keys.PUSH_JOBS) == 20  # once each: the queueing script's marker


def _push_failures() -> float:
    return REGISTRY.get_sample_value("vora_redis_errors_total", {"where": "push"}) or 0.0
