"""The publisher: a stored event is reported stored even when its push wake-up cannot be queued at once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import redis

from testbed.wait import wait_for
from tests.harness import RedisServer
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import EventCatalog, EventPublisher
from vora.store import keys
from vora.store.client import connect
from vora.store.push import PushStore
from vora.store.streams import StreamStore

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
    push_server.stop()
    published = publisher.publish(IDENTITY, "callRinging", RINGING)  # raised the push queue's ConnectionError
    assert published.sequence_number == 1
    assert streams_client.xlen(keys.event_stream(IDENTITY)) == 1
    push_server.start()
    wait_for(lambda: push_client.xlen(keys.PUSH_JOBS) == 1, 10.0, what="the wake-up job to be queued")
    ((_, job),) = push_client.xrange(keys.PUSH_JOBS)  # type: ignore[misc] # redis-py types sync replies as Awaitable | Any
    assert job[b"kind"] == b"ring"
    assert job[b"eventId"] == published.event_id.encode()
