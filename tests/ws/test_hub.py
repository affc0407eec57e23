"""Tests of the hub without a server: routing by identity and session, over real socket pairs."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis

from tests.harness.ws_client import make_publisher
from tests.harness.ws_connection import IDENTITY, OPTIONS, notice_of, read_frames, session
from tests.harness.ws_pair import SocketPair, socket_pair
from vora.store.bus import ControlNotice, EventNotice
from vora.store.sessions import StoredSession
from vora.store.streams import StoredEvent, StreamStore
from vora.ws.connection import Connection
from vora.ws.hub import AdmissionWatch, Hub

OTHER_IDENTITY = "602128708"


@pytest.fixture
def pairs() -> Iterator[list[SocketPair]]:
    """Open three WebSockets over socket pairs."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(socket_pair()) for _ in range(3)]


def running(
    hub: Hub, pair: SocketPair, streams: StreamStore, conn_session: StoredSession, watch: AdmissionWatch | None = None
) -> Connection:
    """Register a caught-up connection on the hub and run its writer in a thread."""
    conn = Connection(pair.transport, conn_session, token_hash="h", streams=streams, options=OPTIONS)
    conn.start_at(streams.newest(conn.identity))
    hub.register(conn, watch)
    threading.Thread(target=conn.run, daemon=True).start()
    return conn


def test_events_reach_only_the_sockets_of_their_identity(pairs: list[SocketPair], redisdb: redis.Redis) -> None:
    """An event of one identity is written to both of its sockets and to no socket of another identity."""
    streams = StreamStore(redisdb, max_length=10_000, max_age_seconds=86_400)
    hub = Hub()
    for n, pair in enumerate(pairs[:2]):
        running(hub, pair, streams, session(f"s{n}"))
    running(hub, pairs[2], streams, replace(session("o1"), identity=OTHER_IDENTITY))
    published = make_publisher(redisdb).publish(IDENTITY, "callRinging", {"callId": "c-1"})
    hub.deliver(notice_of(published))
    assert [pair.client.next() for pair in pairs[:2]] == [published.envelope, published.envelope]
    other = StoredEvent("1-1", 1, "presence", published.envelope["timestamp"], json.dumps({"status": "busy"}))
    hub.deliver(EventNotice(OTHER_IDENTITY, other))
    assert pairs[2].client.next()["eventId"] == "1-1"


def test_control_notices_reach_only_the_sessions_they_name(pairs: list[SocketPair], redisdb: redis.Redis) -> None:
    """Terminating one session closes its socket with channelTerminated; the other session keeps receiving."""
    streams = StreamStore(redisdb, max_length=10_000, max_age_seconds=86_400)
    hub = Hub()
    ended, kept = (running(hub, pair, streams, session(f"s{n}")) for n, pair in enumerate(pairs[:2]))
    hub.apply(ControlNotice(IDENTITY, "terminate", frozenset({ended.session_id}), "logout", ""))
    frames, code = read_frames(pairs[0].client.ws)
    assert [(f["type"], f["data"]) for f in frames] == [("channelTerminated", {"reason": "logout"})]
    assert code == 1000
    hub.unregister(ended)
    hub.apply(ControlNotice(IDENTITY, "subscription", frozenset({kept.session_id}), "", "presence"))
    publisher = make_publisher(redisdb)
    hub.deliver(notice_of(publisher.publish(IDENTITY, "callRinging", {"callId": "filtered"})))
    wanted = publisher.publish(IDENTITY, "presence", {"status": "away"})
    hub.deliver(notice_of(wanted))
    assert pairs[1].client.next()["eventId"] == wanted.event_id
    assert [c.session_id for c in hub.connections()] == [kept.session_id]


def test_drain_sends_maintenance_and_closes_1001(pairs: list[SocketPair], redisdb: redis.Redis) -> None:
    """Draining tells every socket maintenance and closes it with 1001."""
    streams = StreamStore(redisdb, max_length=10_000, max_age_seconds=86_400)
    hub = Hub()
    running(hub, pairs[0], streams, session())
    hub.drain()
    frames, code = read_frames(pairs[0].client.ws)
    assert [f["data"] for f in frames] == [{"reason": "maintenance"}]
    assert code == 1001


def test_a_session_ending_between_admission_and_registration_is_terminated_on_register(
    pairs: list[SocketPair], redisdb: redis.Redis
) -> None:
    """A terminate notice that arrives while a socket is admitted terminates it when it registers, and only it."""
    streams = StreamStore(redisdb, max_length=10_000, max_age_seconds=86_400)
    hub = Hub()
    first, second = hub.watch(IDENTITY), hub.watch(IDENTITY)
    hub.apply(ControlNotice(IDENTITY, "terminate", frozenset({"s1"}), "replaced", ""))
    running(hub, pairs[0], streams, session("s1"), first)
    frames, code = read_frames(pairs[0].client.ws)
    assert [f["data"] for f in frames] == [{"reason": "replaced"}]
    assert code == 1000
    kept = running(hub, pairs[1], streams, session("s2"), second)
    assert not kept.closing


def test_an_admission_that_never_registers_stops_being_watched(pairs: list[SocketPair], redisdb: redis.Redis) -> None:
    """After unwatch, a later notice is not recorded in the watch, and the next socket of that session stays open."""
    streams = StreamStore(redisdb, max_length=10_000, max_age_seconds=86_400)
    hub = Hub()
    watch = hub.watch(IDENTITY)
    hub.unwatch(watch)
    hub.apply(ControlNotice(IDENTITY, "terminate", frozenset({"s1"}), "logout", ""))
    assert watch.ended_reason("s1") is None
    assert not running(hub, pairs[0], streams, session("s1"), hub.watch(IDENTITY)).closing


def test_a_lost_bus_marks_the_admissions_in_flight() -> None:
    """Notices missed while the bus was down mark every open watch, so its socket asks Redis instead."""
    hub = Hub()
    watch = hub.watch(IDENTITY)
    hub.resync_all()
    assert watch.missed
    assert not hub.watch(IDENTITY).missed


class Counted:
    """Record what a hub counts, by name."""

    def __init__(self) -> None:
        self.counted: dict[str, int] = {}

    def __call__(self, name: str, amount: int) -> None:
        self.counted[name] = self.counted.get(name, 0) + amount


def test_the_open_gauge_moves_with_the_open_count(pairs: list[SocketPair], redisdb: redis.Redis) -> None:
    """Registering or unregistering the same connection twice moves neither the open count nor the open gauge."""
    streams = StreamStore(redisdb, max_length=10_000, max_age_seconds=86_400)
    metrics = Counted()
    hub = Hub(on_metric=metrics)
    conn = Connection(pairs[0].transport, session(), token_hash="h", streams=streams, options=OPTIONS)
    hub.register(conn)
    hub.register(conn)
    assert (hub.open_count, metrics.counted["open:websocket"]) == (1, 1)
    hub.unregister(conn)
    hub.unregister(conn)
    assert (hub.open_count, metrics.counted["open:websocket"]) == (0, 0)
