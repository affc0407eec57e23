"""Tests of channelOpened: every connection first says where its delivery starts, so that nothing is lost on a drop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from testbed.vora_server import RunningServer
from tests.harness.ws_client import EventClient, EventStreamClient, open_event_stream
from tests.harness.ws_server import IDENTITY, TRANSPORTS, ServerFactory, drop_before_opened, open_channel
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import EventCatalog, EventPublisher
from vora.store import keys
from vora.store.streams import StreamStore, stream_position

pytestmark = [pytest.mark.slow, pytest.mark.ws]

Connect = Callable[..., EventClient]
Setup = Callable[..., str]
SetupAnswer = Callable[..., dict[str, str]]


def opened_fields(client: EventClient) -> dict[str, Any]:
    """Return the channelOpened fields that depend only on the connection's transport and the server's settings."""
    return {
        "transport": "sse" if isinstance(client, EventStreamClient) else "websocket",
        "heartbeatIntervalSeconds": 5,  # VORA_WS_HEARTBEAT_INTERVAL of the test servers
        "reconnectWindowSeconds": 1,  # a few sockets at the default VORA_RECONNECT_RATE: the minimum
    }


def opened(client: EventClient) -> dict[str, Any]:
    """Read a connection's first message, which must be channelOpened, and return its data."""
    first = client.next(skip=())
    assert first["type"] == "channelOpened", first
    assert first["eventId"] is None
    data: dict[str, Any] = first["data"]
    assert {k: data[k] for k in opened_fields(client)} == opened_fields(client)
    if isinstance(client, EventStreamClient):
        assert client.last_event_id == data["lastEventId"]  # its `id:`, which EventSource sends back
    return data


def test_first_message_says_where_each_kind_of_connection_starts(
    server: RunningServer, setup_token: Setup, connect_either: Connect, publisher: EventPublisher
) -> None:
    """A first socket starts after the event before setup, a later one after the newest, a resumed one after its id."""
    before = publisher.publish(IDENTITY, "callRinging", {"callId": "before-setup"})
    token = setup_token(server)
    early = publisher.publish(IDENTITY, "callRinging", {"callId": "after-setup"})
    first = connect_either(server, token)
    assert opened(first) == {**opened_fields(first), "lastEventId": before.event_id, "resumed": False}
    assert first.next()["eventId"] == early.event_id
    later = connect_either(server, token)
    assert opened(later)["lastEventId"] == early.event_id
    resumed = connect_either(server, token, last_event_id=before.event_id)
    assert (data := opened(resumed))["lastEventId"] == before.event_id
    assert data["resumed"] is True
    assert resumed.next()["eventId"] == early.event_id


@pytest.mark.parametrize("history", ["none", "events"])
def test_a_connection_that_received_nothing_resumes_from_its_start_and_loses_nothing(
    server: RunningServer, setup_token: Setup, connect_either: Connect, publisher: EventPublisher, history: str
) -> None:
    """Dropped before any event, a connection resumed from its opening position gets what was published meanwhile."""
    token = setup_token(server)
    expected_start = "0-0"  # an identity that never had an event
    if history == "events":
        # The session's socket that saw the stream's events went away: the next one starts live.
        seen = connect_either(server, token)
        expected_start = publisher.publish(IDENTITY, "presence", {"status": "busy"}).event_id
        assert seen.next()["eventId"] == expected_start
        seen.close()
    idle = connect_either(server, token)
    start = opened(idle)["lastEventId"]
    assert start == expected_start
    idle.close()
    missed = [publisher.publish(IDENTITY, "callHeld", {"callId": f"m-{n}"}) for n in range(3)]
    # Without the position it would start live again, after every event it missed.
    assert opened(connect_either(server, token))["lastEventId"] == missed[-1].event_id
    back = connect_either(server, token, last_event_id=start)
    assert opened(back)["lastEventId"] == start
    assert [e["eventId"] for e in back.events(3)] == [m.event_id for m in missed]
    live = publisher.publish(IDENTITY, "callEnded", {"callId": "m-0"})
    assert back.next()["eventId"] == live.event_id
    assert [e["type"] for e in back.received] == ["channelOpened", "callHeld", "callHeld", "callHeld", "callEnded"]


def test_event_source_resumes_from_the_opening_id_with_last_event_id(
    server: RunningServer, setup_token: Setup, publisher: EventPublisher
) -> None:
    """The event stream's channelOpened carries `id:`: EventSource's own reconnect sends it back and loses nothing."""
    token = setup_token(server)
    publisher.publish(IDENTITY, "presence", {"status": "away"})
    open_event_stream(server.base_url, token).close()  # the session's first stream: later ones start live
    idle = open_event_stream(server.base_url, token)
    try:
        start = opened(idle)["lastEventId"]
    finally:
        idle.close()
    missed = [publisher.publish(IDENTITY, "callHeld", {"callId": f"m-{n}"}) for n in range(2)]
    back = open_event_stream(server.base_url, token, header_last_event_id=idle.last_event_id)
    try:
        assert opened(back) == {**opened_fields(back), "lastEventId": start, "resumed": True}
        assert [e["eventId"] for e in back.events(2)] == [m.event_id for m in missed]
        assert back.last_event_id == missed[-1].event_id
    finally:
        back.close()


def test_opening_position_after_a_retention_gap_is_just_before_the_oldest_retained(
    make_server: ServerFactory, setup_token: Setup, connect_either: Connect, redisdb: redis.Redis, redis_proc: object
) -> None:
    """The opening position after a retention gap precedes the oldest retained event: resuming there is no gap."""
    small = EventPublisher(EventCatalog(DEFAULT_SPEC_DIR), StreamStore(redisdb, max_length=10, max_age_seconds=86_400))
    with make_server() as server:
        token = setup_token(server)
        gone = small.publish(IDENTITY, "callRinging", {"callId": "c-0"})
        for n in range(1, 400):
            small.publish(IDENTITY, "callRinging", {"callId": f"c-{n}"})
        client = connect_either(server, token, last_event_id=gone.event_id)
        start = opened(client)["lastEventId"]
        gap = client.next()
        assert gap["type"] == "resumeGap"
        millis, sequence = stream_position(gap["data"]["oldestEventId"])
        assert start == f"{millis}-{sequence - 1}"
        client.close()
        again = connect_either(server, token, last_event_id=start)
        assert opened(again)["lastEventId"] == start
        assert again.next()["eventId"] == gap["data"]["oldestEventId"]
        assert "resumeGap" not in {e["type"] for e in again.received}


@pytest.mark.parametrize("history", ["none", "events", "expired"])
def test_setup_answers_the_position_its_first_connection_starts_after(
    server: RunningServer,
    setup_answer: SetupAnswer,
    connect_either: Connect,
    publisher: EventPublisher,
    redisdb: redis.Redis,
    history: str,
) -> None:
    """Setup's lastEventId is the lastEventId of the session's first connection's channelOpened."""
    expected = "0-0"  # an identity that never had an event
    if history == "events":
        expected = publisher.publish(IDENTITY, "callRinging", {"callId": "before-setup"}).event_id
    elif history == "expired":
        for n in range(3):
            publisher.publish(IDENTITY, "callRinging", {"callId": f"gone-{n}"})
        redisdb.delete(keys.event_stream(IDENTITY))  # the stream aged out whole; its counter stays
        expected = "0-3"
    answer = setup_answer(server)
    assert answer["lastEventId"] == expected
    first = connect_either(server, answer["webSocketToken"])
    assert opened(first)["lastEventId"] == expected
    published = publisher.publish(IDENTITY, "callRinging", {"callId": "after-setup"})
    assert first.next()["eventId"] == published.event_id


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_first_connection_reset_before_channel_opened_loses_nothing_from_setups_position(
    server: RunningServer, setup_answer: SetupAnswer, publisher: EventPublisher, transport: str
) -> None:
    """A first connection reset unread loses E1 to a reopen without a position, and delivers it once from setup's."""
    # Without a position (the old contract): the reset connection was the first, the next starts live.
    bare = setup_answer(server, subject="alice")
    lost = publisher.publish(IDENTITY, "callRinging", {"callId": "lost"})
    drop_before_opened(transport, server, bare["webSocketToken"])
    live = open_channel(transport, server, bare["webSocketToken"])
    try:
        assert opened(live)["lastEventId"] == lost.event_id  # after E1: it is never delivered
        later = publisher.publish(IDENTITY, "callHeld", {"callId": "lost"})
        assert live.next()["eventId"] == later.event_id
    finally:
        live.close()
    # With setup's position, as the first open and again after the reset.
    answer = setup_answer(server, subject="bob")
    kept = publisher.publish(IDENTITY, "callRinging", {"callId": "kept"})
    drop_before_opened(transport, server, answer["webSocketToken"])
    back = open_channel(transport, server, answer["webSocketToken"], answer["lastEventId"])
    try:
        assert opened(back)["lastEventId"] == answer["lastEventId"]
        after = publisher.publish(IDENTITY, "callHeld", {"callId": "kept"})
        assert [e["eventId"] for e in back.events(2)] == [kept.event_id, after.event_id]
        assert [e["type"] for e in back.received] == ["channelOpened", "callRinging", "callHeld"]
    finally:
        back.close()
