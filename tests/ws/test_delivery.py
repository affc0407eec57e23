"""Tests of event delivery over a real socket: envelope, filters, order, resume."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import redis
import requests

from testbed.vora_server import RunningServer
from tests.harness.tokens import TokenFactory
from tests.harness.ws_client import EventClient, bearer
from tests.harness.ws_server import IDENTITY, ServerFactory
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import EventCatalog, EventPublisher, InvalidEvent
from vora.store import keys
from vora.store.streams import StreamStore

pytestmark = [pytest.mark.slow, pytest.mark.ws]

Connect = Callable[..., EventClient]


Setup = Callable[..., str]


def test_published_event_arrives_with_its_envelope(
    server: RunningServer, setup_token: Setup, connect_either: Connect, publisher: EventPublisher
) -> None:
    """A socket opened with the setup token receives a published event in the documented envelope."""
    client = connect_either(server, setup_token(server))
    published = publisher.publish(IDENTITY, "callRinging", {"callId": "c-1", "from": "+34602128708"})
    event = client.next()
    assert event == published.envelope
    assert event["eventId"] == published.event_id
    assert event["identity"] == IDENTITY
    assert event["data"] == {"callId": "c-1", "from": "+34602128708"}


def test_bearer_header_opens_the_socket(
    server: RunningServer, setup_token: Setup, connect_either: Connect, publisher: EventPublisher
) -> None:
    """Non-browser clients may send the token as Authorization: Bearer."""
    client = connect_either(server, setup_token(server), bearer=True)
    publisher.publish(IDENTITY, "presence", {"status": "busy"})
    assert client.next()["type"] == "presence"


def test_first_socket_gets_events_published_since_setup(
    server: RunningServer, setup_token: Setup, connect_either: Connect, publisher: EventPublisher
) -> None:
    """Events published between setup and the first socket are not lost."""
    publisher.publish(IDENTITY, "callRinging", {"callId": "before-setup"})
    token = setup_token(server)
    early = publisher.publish(IDENTITY, "callRinging", {"callId": "after-setup"})
    client = connect_either(server, token)
    assert client.next()["eventId"] == early.event_id


def test_sequence_numbers_grow_by_one_in_order(
    server: RunningServer, setup_token: Setup, connect_either: Connect, publisher: EventPublisher
) -> None:
    """A subscribe-all client with every scope sees sequence numbers 1, 2, 3... in order."""
    client = connect_either(server, setup_token(server))
    for n in range(50):
        publisher.publish(IDENTITY, "callHeld", {"callId": f"c-{n}"})
    events = client.events(50)
    assert [e["sequenceNumber"] for e in events] == list(range(1, 51))
    assert [e["data"]["callId"] for e in events] == [f"c-{n}" for n in range(50)]


def test_subscription_filters_events(
    server: RunningServer,
    setup_token: Setup,
    connect_either: Connect,
    publisher: EventPublisher,
    make_token: TokenFactory,
) -> None:
    """After subscribing to callRinging only, presence events are not delivered, even to an open socket."""
    client = connect_either(server, setup_token(server))
    response = requests.post(
        f"{server.base_url}/identity/{IDENTITY}/eventSubscription",
        json={"subscribeAll": False, "events": ["callRinging"]},
        headers=bearer(make_token),
        timeout=5,
    )
    assert response.status_code == 200
    # The change reaches the socket through Redis; a marker event proves it was applied.
    publisher.publish(IDENTITY, "presence", {"status": "away"})
    wanted = publisher.publish(IDENTITY, "callRinging", {"callId": "c-2"})
    assert client.next() == wanted.envelope


def test_unsubscribed_session_receives_only_lifecycle_events(
    make_server: ServerFactory,
    setup_token: Setup,
    connect_either: Connect,
    publisher: EventPublisher,
    make_token: TokenFactory,
) -> None:
    """With subscribeAll false and no events, only heartbeats arrive."""
    with make_server(ws_heartbeat_interval="0.5") as server:
        token = setup_token(server)
        requests.post(
            f"{server.base_url}/identity/{IDENTITY}/eventSubscription",
            json={"subscribeAll": False},
            headers=bearer(make_token),
            timeout=5,
        ).raise_for_status()
        client = connect_either(server, token)
        publisher.publish(IDENTITY, "callRinging", {"callId": "c-3"})
        assert client.next(skip=())["type"] == "channelOpened"
        assert client.next(skip=())["type"] == "heartbeat"
        assert client.next(skip=())["type"] == "heartbeat"
        assert [e["type"] for e in client.received] == ["channelOpened", "heartbeat", "heartbeat"]


def test_scopes_filter_events(
    server: RunningServer, setup_token: Setup, connect_either: Connect, publisher: EventPublisher
) -> None:
    """A token without scope.vora.presence never receives presence events; calls still arrive."""
    token = setup_token(server, scopes=("scope.vora.identities", "scope.vora.calls"))
    client = connect_either(server, token)
    publisher.publish(IDENTITY, "presence", {"status": "busy"})
    publisher.publish(IDENTITY, "recordingStarted", {"callId": "c", "recordingId": "r"})
    call = publisher.publish(IDENTITY, "callAnswered", {"callId": "c-4"})
    assert client.next() == call.envelope


def test_resume_after_disconnect_loses_nothing(
    server: RunningServer, setup_token: Setup, connect_either: Connect, publisher: EventPublisher
) -> None:
    """A client that reconnects with lastEventId receives exactly what it missed, in order, then live events."""
    token = setup_token(server)
    first = connect_either(server, token)
    seen = publisher.publish(IDENTITY, "callRinging", {"callId": "c-1"})
    assert first.next()["eventId"] == seen.event_id
    first.close()
    missed = [publisher.publish(IDENTITY, "callHeld", {"callId": f"m-{n}"}) for n in range(5)]
    second = connect_either(server, token, last_event_id=seen.event_id)
    assert [e["eventId"] for e in second.events(5)] == [m.event_id for m in missed]
    live = publisher.publish(IDENTITY, "callEnded", {"callId": "c-1"})
    assert second.next()["eventId"] == live.event_id


def test_resume_before_retention_reports_a_gap(
    make_server: ServerFactory, setup_token: Setup, connect_either: Connect, redisdb: redis.Redis, redis_proc: object
) -> None:
    """A lastEventId older than what is retained yields resumeGap, then the oldest retained event."""
    small = EventPublisher(EventCatalog(DEFAULT_SPEC_DIR), StreamStore(redisdb, max_length=10, max_age_seconds=86_400))
    with make_server() as server:
        token = setup_token(server)
        first = small.publish(IDENTITY, "callRinging", {"callId": "c-0"})
        for n in range(1, 400):
            small.publish(IDENTITY, "callRinging", {"callId": f"c-{n}"})
        oldest = redisdb.xrange(keys.event_stream(IDENTITY), count=1)[0][0].decode()  # type: ignore[index] # redis-py types sync replies as Awaitable | Any
        assert oldest != first.event_id
        client = connect_either(server, token, last_event_id=first.event_id)
        gap = client.next()
        assert gap["type"] == "resumeGap"
        assert gap["data"] == {"reason": "retention", "requestedEventId": first.event_id, "oldestEventId": oldest}
        assert client.next()["eventId"] == oldest


def test_unknown_type_or_bad_payload_is_refused_and_writes_nothing(
    publisher: EventPublisher, redisdb: redis.Redis
) -> None:
    """Publishing an unknown type or data that breaks its schema raises and leaves Redis untouched."""
    for event_type, data in [
        ("callExploded", {"callId": "c"}),
        ("callRinging", {}),
        ("callRinging", {"callId": "c", "extra": 1}),
        ("presence", {"status": "sleepy"}),
        ("recordingStarted", {"callId": "c"}),
        ("heartbeat", {"reason": "interval"}),
    ]:
        with pytest.raises(InvalidEvent):
            publisher.publish(IDENTITY, event_type, data)
    with pytest.raises(InvalidEvent, match="identity"):
        publisher.publish("{slot}", "presence", {"status": "busy"})
    with pytest.raises(InvalidEvent, match="timestamp"):
        publisher.publish(IDENTITY, "presence", {"status": "busy"}, timestamp="yesterday")
    assert list(redisdb.scan_iter()) == []


def test_cli_publish_reaches_the_socket(
    server: RunningServer, setup_token: Setup, connect_either: Connect, ws_env: dict[str, str]
) -> None:
    """`vora events publish` is the ingress: its event reaches an open socket."""
    client = connect_either(server, setup_token(server))
    result = subprocess.run(
        [sys.executable, "-m", "vora.cli", "events", "publish", IDENTITY, "callMissed", "--data", '{"callId": "x"}'],
        env={**ws_env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    printed = json.loads(result.stdout)
    event = client.next()
    assert event["eventId"] == printed["eventId"]
    assert event["type"] == "callMissed"


def test_missed_subscription_notice_is_applied_by_the_lease(
    make_server: ServerFactory,
    setup_token: Setup,
    connect_either: Connect,
    publisher: EventPublisher,
    redisdb: redis.Redis,
) -> None:
    """A subscription change whose notice never reached the worker takes effect at the next lease renewal."""
    with make_server(ws_lease_interval="0.3") as server:
        token = setup_token(server)
        client = connect_either(server, token)
        [session_id] = [s.decode() for s in redisdb.zrange(keys.sessions_index(IDENTITY), 0, -1)]  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any
        # Written behind VORA's back: no notice is published, as if the worker had missed it.
        redisdb.hset(keys.session(IDENTITY, session_id), "events", "callRinging")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            publisher.publish(IDENTITY, "presence", {"status": "busy"})
            marker = publisher.publish(IDENTITY, "callRinging", {"callId": "marker"})
            received = client.next()
            if received["type"] == "presence":
                assert client.next()["eventId"] == marker.event_id
                continue
            assert received["eventId"] == marker.event_id
            break
        else:
            pytest.fail("the subscription change was never applied")
