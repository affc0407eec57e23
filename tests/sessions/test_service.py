"""Tests of socket admission, the SessionService operation the socket endpoint runs before the upgrade."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from tests.harness.rest import IDENTITY, setup_session
from tests.harness.ws_client import make_publisher
from vora.services import services_of
from vora.sessions.service import SessionService, SocketRefused
from vora.store import keys
from vora.store.sessions import SessionStore
from vora.store.streams import parse_event_id, position_before, stream_position

NOW_MS = 1_800_000_000_000


@pytest.fixture
def service(app: Flask) -> SessionService:
    """Return the app's session service."""
    return services_of(app).sessions


@pytest.fixture
def token(client: FlaskClient, auth: Callable[..., dict[str, str]], provision: Callable[..., None]) -> str:
    """Open a session through the REST API and return its WebSocket token."""
    provision("alice", [IDENTITY])
    return setup_session(client, auth("alice"))


def test_unknown_token_is_refused_with_401(service: SessionService) -> None:
    """A token that names no session is refused before anything is recorded."""
    with pytest.raises(SocketRefused) as refused:
        service.admit_socket("v1.OTEwMTExMDAw." + "A" * 43, None, NOW_MS)
    assert refused.value.status == 401


def test_first_socket_starts_at_setup_and_later_ones_live(
    service: SessionService, token: str, redisdb: redis.Redis
) -> None:
    """The first socket of a session starts before its creation; a later one after the newest event."""
    first = service.admit_socket(token, None, NOW_MS)
    assert first.start == position_before(first.session.created_at_ms)
    published = make_publisher(redisdb).publish(IDENTITY, "callRinging", {"callId": "c-1"})
    later = service.admit_socket(token, None, NOW_MS)
    assert later.start == stream_position(published.event_id)
    assert (first.resumed, first.gap, later.resumed, later.gap) == (False, None, False, None)


def test_resume_behind_the_retention_carries_the_gap(service: SessionService, token: str, redisdb: redis.Redis) -> None:
    """A lastEventId older than the oldest retained event yields the resumeGap data and starts at the oldest."""
    publisher = make_publisher(redisdb, max_length=10)
    gone = publisher.publish(IDENTITY, "callHeld", {"callId": "gone"})
    for n in range(400):
        publisher.publish(IDENTITY, "callHeld", {"callId": f"c-{n}"})
    admission = service.admit_socket(token, stream_position(gone.event_id), NOW_MS)
    assert admission.resumed
    assert admission.start is None
    assert admission.gap is not None
    assert admission.gap["requestedEventId"] == gone.event_id


def _redis_ms(client: redis.Redis) -> int:
    """Return Redis' clock in milliseconds, the clock eventIds are numbered by."""
    seconds, micros = cast("tuple[int, int]", client.time())  # redis-py types it for its asyncio client too
    return seconds * 1000 + micros // 1000


def test_resume_from_before_redis_lost_the_stream_reads_what_was_published_since(
    service: SessionService, token: str, redisdb: redis.Redis
) -> None:
    """A lastEventId from a stream Redis lost (its sequence past the new counter) is not ahead: nothing is skipped."""
    publisher = make_publisher(redisdb)
    last = [publisher.publish(IDENTITY, "callHeld", {"callId": f"c-{n}"}) for n in range(3)][-1]
    redisdb.delete(keys.event_stream(IDENTITY), keys.event_sequence(IDENTITY))  # an empty restart, or a lossy failover
    # A restart takes longer than a millisecond: the next events are numbered from a later one (within the same one,
    # their restarted sequence would number them before the lost ones, which no real restart can do).
    while _redis_ms(redisdb) <= stream_position(last.event_id)[0]:
        pass
    since = [publisher.publish(IDENTITY, "callHeld", {"callId": f"d-{n}"}) for n in range(2)]
    admission = service.admit_socket(token, stream_position(last.event_id), NOW_MS)
    assert admission.gap is None
    assert admission.start == stream_position(last.event_id)
    assert stream_position(since[0].event_id) > admission.start


@pytest.mark.parametrize(
    ("published", "ahead_of"),
    [(3, "the newest event's milliseconds"), (3, "the newest event's sequence number"), (0, "Redis' clock")],
)
def test_resume_from_the_future_is_announced_and_starts_after_the_newest(
    service: SessionService, token: str, redisdb: redis.Redis, published: int, ahead_of: str
) -> None:
    """A lastEventId after anything the stream held yields resumeGap(ahead) and resumes after the newest event."""
    publisher = make_publisher(redisdb)
    newest = None
    for n in range(published):
        newest = publisher.publish(IDENTITY, "callHeld", {"callId": f"c-{n}"})
    redis_ms = int(redisdb.time()[0]) * 1000  # type: ignore[index] # redis-py types sync replies as Awaitable | Any
    if newest is None:
        future = (redis_ms + 3_600_000, 1)
    else:
        millis, seq = stream_position(newest.event_id)
        future = (millis + 3_600_000, seq) if ahead_of.endswith("milliseconds") else (millis, seq + 1)
    admission = service.admit_socket(token, future, NOW_MS)
    assert admission.gap == {
        "reason": "ahead",
        "requestedEventId": f"{future[0]}-{future[1]}",
        "oldestEventId": None,
        "newestEventId": None if newest is None else newest.event_id,
    }
    assert admission.start == (None if newest is None else stream_position(newest.event_id))


def test_resume_from_the_newest_event_is_no_gap(service: SessionService, token: str, redisdb: redis.Redis) -> None:
    """The newest event itself, or one before it, is a position the stream knows: no gap."""
    newest = make_publisher(redisdb).publish(IDENTITY, "callHeld", {"callId": "c"})
    admission = service.admit_socket(token, stream_position(newest.event_id), NOW_MS)
    assert (admission.gap, admission.start) == (None, stream_position(newest.event_id))


def test_the_cap_refuses_with_429_and_a_closed_socket_frees_its_place(
    app: Flask, token: str, redisdb: redis.Redis
) -> None:
    """Past VORA_WS_MAX_SOCKETS_PER_SESSION admission answers 429; socket_closed makes room again."""
    state = services_of(app)
    service = SessionService(
        directory=state.directory,
        store=SessionStore(redisdb, ttl_seconds=60, max_per_user=5, max_sockets_per_session=2),
        presence_lease_ms=45_000,
    )
    first = service.admit_socket(token, None, NOW_MS)
    service.admit_socket(token, None, NOW_MS)
    with pytest.raises(SocketRefused) as refused:
        service.admit_socket(token, None, NOW_MS)
    assert refused.value.status == 429
    service.socket_closed(first)
    service.admit_socket(token, None, NOW_MS)


def _resumed_from_start(service: SessionService, token: str, start_id: str) -> tuple[object, object]:
    """Resume from an admission's start_id; return the resumed admission's gap and the start_id it reports."""
    position = parse_event_id(start_id)
    assert position is not None, start_id
    again = service.admit_socket(token, position, NOW_MS)
    return again.gap, again.start_id


def test_start_id_of_an_identity_that_never_had_an_event_is_0_0(service: SessionService, token: str) -> None:
    """An empty stream with no counter starts after 0-0, and resuming from it is no gap."""
    first = service.admit_socket(token, None, NOW_MS)
    later = service.admit_socket(token, None, NOW_MS)
    assert (first.start_id, later.start_id) == ("0-0", "0-0")
    assert _resumed_from_start(service, token, first.start_id) == (None, "0-0")


def test_first_socket_start_id_is_the_event_before_the_session(
    service: SessionService,
    client: FlaskClient,
    auth: Callable[..., dict[str, str]],
    provision: Callable[..., None],
    redisdb: redis.Redis,
) -> None:
    """A first socket starts after the newest event published before its session, resumed from without a gap."""
    provision("alice", [IDENTITY])
    publisher = make_publisher(redisdb)
    before = publisher.publish(IDENTITY, "callHeld", {"callId": "before"})
    token = setup_session(client, auth("alice"))
    publisher.publish(IDENTITY, "callHeld", {"callId": "after"})
    first = service.admit_socket(token, None, NOW_MS)
    assert first.start_id == before.event_id
    assert _resumed_from_start(service, token, first.start_id) == (None, before.event_id)


def test_start_id_before_the_oldest_retained_event_when_none_precedes_the_start(
    service: SessionService, token: str, redisdb: redis.Redis
) -> None:
    """With nothing retained at the start, the start is the id just before the oldest retained event: no gap."""
    publisher = make_publisher(redisdb)
    events = [publisher.publish(IDENTITY, "callHeld", {"callId": f"c-{n}"}) for n in range(3)]
    first = service.admit_socket(token, None, NOW_MS)  # all three came after the session's creation
    millis, sequence = stream_position(events[0].event_id)
    assert first.start_id == f"{millis}-{sequence - 1}"
    assert _resumed_from_start(service, token, first.start_id) == (None, first.start_id)


def test_later_socket_start_id_is_the_newest_event(service: SessionService, token: str, redisdb: redis.Redis) -> None:
    """A later socket starts live, after the newest event, and says so."""
    service.admit_socket(token, None, NOW_MS)
    newest = make_publisher(redisdb).publish(IDENTITY, "callHeld", {"callId": "c"})
    later = service.admit_socket(token, None, NOW_MS)
    assert later.start_id == newest.event_id
    assert _resumed_from_start(service, token, later.start_id) == (None, newest.event_id)


def test_start_id_of_an_aged_out_stream_counts_what_was_published(
    service: SessionService, token: str, redisdb: redis.Redis
) -> None:
    """A stream emptied by retention after N events starts after 0-N: no gap, and no ahead either."""
    publisher = make_publisher(redisdb)
    for n in range(4):
        publisher.publish(IDENTITY, "callHeld", {"callId": f"c-{n}"})
    redisdb.delete(keys.event_stream(IDENTITY))  # what age trimming leaves: the counter, no entries
    service.admit_socket(token, None, NOW_MS)
    later = service.admit_socket(token, None, NOW_MS)
    assert later.start_id == "0-4"
    assert _resumed_from_start(service, token, later.start_id) == (None, "0-4")
    after = publisher.publish(IDENTITY, "callHeld", {"callId": "after"})
    resumed = service.admit_socket(token, parse_event_id(later.start_id), NOW_MS)
    assert resumed.gap is None
    assert resumed.start is not None
    assert resumed.start < stream_position(after.event_id)


def test_resumed_start_id_is_the_client_position_or_the_one_after_a_gap(
    service: SessionService, token: str, redisdb: redis.Redis
) -> None:
    """Resuming without a gap echoes lastEventId; after a retention gap, the id just before the oldest retained."""
    publisher = make_publisher(redisdb, max_length=10)
    gone = publisher.publish(IDENTITY, "callHeld", {"callId": "gone"})
    kept = publisher.publish(IDENTITY, "callHeld", {"callId": "kept"})
    assert service.admit_socket(token, stream_position(kept.event_id), NOW_MS).start_id == kept.event_id
    for n in range(400):
        publisher.publish(IDENTITY, "callHeld", {"callId": f"c-{n}"})
    gap = service.admit_socket(token, stream_position(gone.event_id), NOW_MS)
    assert gap.gap is not None
    millis, sequence = stream_position(gap.gap["oldestEventId"])
    assert gap.start_id == f"{millis}-{sequence - 1}"
    assert _resumed_from_start(service, token, gap.start_id) == (None, gap.start_id)
    millis, sequence = stream_position(publisher.publish(IDENTITY, "callHeld", {"callId": "newest"}).event_id)
    ahead = service.admit_socket(token, (millis, sequence + 5), NOW_MS)
    assert (ahead.gap is not None, ahead.start_id) == (True, f"{millis}-{sequence}")
