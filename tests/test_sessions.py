"""Tests of socket admission, the SessionService operation the socket endpoint runs before the upgrade."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from tests.handlers.test_session import IDENTITY, setup_session
from tests.ws.client import make_publisher
from vora.sessions import SessionService, SocketRefused
from vora.state import vora_state
from vora.store.sessions import SessionStore
from vora.store.streams import position_before, stream_position

NOW_MS = 1_800_000_000_000


@pytest.fixture
def service(app: Flask) -> SessionService:
    """Return the app's session service."""
    return vora_state(app).sessions


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
    state = vora_state(app)
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
