"""VORA on a standalone Redis that stops, comes back, drops the hub's subscription or stalls writes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import websocket

from testbed.vora_server import RunningServer, running_server
from tests.harness import RedisServer
from tests.harness.journey import (
    Api,
    Entry,
    assert_delivered,
    assert_no_server_errors,
    assert_unavailable,
    readiness,
    wait_ready,
)
from tests.harness.tokens import TokenFactory
from tests.harness.topology import EnvFactory, Sockets
from tests.harness.ws_client import make_publisher, open_client
from vora.events.publisher import EventPublisher
from vora.store import keys, scripts
from vora.store.client import connect
from vora.store.directory import Directory

pytestmark = [pytest.mark.topology, pytest.mark.slow]

USER = "erin"
IDENTITY = "910333000"
# Every write reaches the disk before it is acknowledged, so a restart keeps everything.
PERSISTENT = ["--appendonly", "yes", "--appendfsync", "always"]


@dataclass
class Stack:
    """One Redis, one VORA server on it, a publisher and a user with one identity."""

    redis_server: RedisServer
    server: RunningServer
    client: redis.Redis
    publisher: EventPublisher
    api: Api

    @property
    def entry(self) -> Entry:
        """Return where clients reach the server."""
        return Entry.of(self.server)


@contextlib.contextmanager
def stack(make_env: EnvFactory, make_token: TokenFactory, log_dir: Path, **settings: str) -> Iterator[Stack]:
    """Start a persistent Redis and a VORA server on it, and stop both whatever happens."""
    with (
        RedisServer(extra_args=PERSISTENT) as redis_server,
        running_server(make_env(redis_server.url, ws_heartbeat_interval="0.5", **settings), log_dir) as server,
        contextlib.closing(connect(redis_server.url, timeout=2.0)) as client,
    ):
        Directory(client).add(USER, [IDENTITY])
        api = Api(Entry.of(server), make_token(USER))
        yield Stack(redis_server, server, client, make_publisher(client), api)


def test_redis_outage_answers_503_keeps_sockets_and_recovers_without_restart(
    make_env: EnvFactory, make_token: TokenFactory, sockets: Sockets, tmp_path: Path
) -> None:
    """With Redis stopped REST and readiness answer 503 and sockets stay open; once it is back, nothing is lost."""
    with stack(make_env, make_token, tmp_path) as s:
        token = s.api.setup(IDENTITY)
        listener = sockets(s.entry, token)
        seen = s.publisher.publish(IDENTITY, "callRinging", {"callId": "before"})
        assert_delivered(listener, [seen])

        s.redis_server.stop()
        assert_unavailable(s.api.identities())
        assert_unavailable(s.api.try_setup(IDENTITY))
        assert readiness(s.entry) == 503
        for _ in range(2):
            assert listener.next(skip=())["type"] == "heartbeat"

        s.redis_server.start()  # the same port and directory: its append-only file brings the data back
        wait_ready(s.entry, 15.0)
        assert s.api.identities().json() == {"identities": [IDENTITY]}
        after = [s.publisher.publish(IDENTITY, "callAnswered", {"callId": f"after-{n}"}) for n in range(2)]
        assert_delivered(listener, after)

        listener.close()
        missed = [s.publisher.publish(IDENTITY, "callHeld", {"callId": f"missed-{n}"}) for n in range(3)]
        resumed = sockets(s.entry, token, last_event_id=after[-1].event_id)
        assert_delivered(resumed, missed)
        assert_delivered(resumed, [s.publisher.publish(IDENTITY, "callEnded", {"callId": "live"})])
        assert [e["sequenceNumber"] for e in listener.received + resumed.received if e["eventId"]] == list(range(1, 8))
        assert_no_server_errors(s.server, redis_was_lost=True)


def test_subscription_restored_behind_the_hubs_back_still_delivers_what_it_missed(
    make_env: EnvFactory, make_token: TokenFactory, sockets: Sockets, tmp_path: Path
) -> None:
    """An event published while Redis had dropped the hub's subscription, which redis-py restored, still arrives."""
    with stack(make_env, make_token, tmp_path) as s:
        listener = sockets(s.entry, s.api.setup(IDENTITY))
        seen = s.publisher.publish(IDENTITY, "callRinging", {"callId": "before"})
        assert_delivered(listener, [seen])

        # Redis runs a pipeline's commands back to back: the event is published after the hub's
        # connection is dropped and before anyone can subscribe again. The pipeline runs the
        # publishing script with the arguments vora.store.streams.StreamStore.append gives it.
        publish = s.client.register_script(scripts.PUBLISH_EVENT)
        pipe = s.client.pipeline(transaction=False)
        pipe.client_kill_filter(_type="pubsub")
        data = '{"callId":"in-the-gap"}'
        stream_args: list[str | int] = [10_000, 86_400_000, 30 * 86_400_000, keys.EVENTS_CHANNEL, IDENTITY]
        publish(
            keys=[keys.event_stream(IDENTITY), keys.event_sequence(IDENTITY)],
            args=["callHeld", "2026-11-23T01:00:00.000Z", data, *stream_args],
            client=pipe,
        )
        killed, (gap_id, gap_sequence) = pipe.execute()
        assert killed >= 1  # the hub's subscription was among the connections dropped

        live = s.publisher.publish(IDENTITY, "callEnded", {"callId": "after"})
        gap, after = listener.events(2)
        assert (gap["eventId"], gap["sequenceNumber"], gap["data"]) == (gap_id.decode(), 2, {"callId": "in-the-gap"})
        assert gap_sequence == 2
        assert after == live.envelope
        assert_no_server_errors(s.server, redis_was_lost=True)


def test_redis_stalling_writes_refuses_the_socket_with_503_before_the_upgrade(
    make_env: EnvFactory, make_token: TokenFactory, tmp_path: Path
) -> None:
    """When Redis stalls writes, the script admitting the socket cannot run: HTTP 503 before the upgrade, no socket."""
    with stack(make_env, make_token, tmp_path, redis_timeout="0.2") as s:
        token = s.api.setup(IDENTITY)
        # Reads go on, so the token lookup passes; the script that attaches the socket stalls.
        s.client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        try:
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                open_client(s.entry.ws_url, token)
            assert refused.value.status_code == 503
            assert b'"status": "503"' in (refused.value.resp_body or b"")
        finally:
            s.client.execute_command("CLIENT", "UNPAUSE")
        open_client(s.entry.ws_url, token).close()  # once writes go on, the same token opens a socket
        assert_no_server_errors(s.server, redis_was_lost=True)


def test_a_client_resuming_after_redis_lost_everything_gets_every_event_published_since(
    make_env: EnvFactory, make_token: TokenFactory, sockets: Sockets, tmp_path: Path
) -> None:
    """After FLUSHALL (an empty restart) sequence numbers start again; a resume from before misses no new event."""
    with stack(make_env, make_token, tmp_path) as s:
        listener = sockets(s.entry, s.api.setup(IDENTITY))
        before = [s.publisher.publish(IDENTITY, "callHeld", {"callId": f"before-{n}"}) for n in range(3)]
        assert_delivered(listener, before)
        listener.close()

        s.client.flushall()  # what a Redis without persistence that restarted holds
        Directory(s.client).add(USER, [IDENTITY])  # the telephony side restores the directory
        token = s.api.setup(IDENTITY)  # the old session went with everything else
        since = [s.publisher.publish(IDENTITY, "callHeld", {"callId": f"since-{n}"}) for n in range(2)]
        assert [event.sequence_number for event in since] == [1, 2]
        # The client resumes from the last event it had (sequence 3, past the new counter, but before the new ids):
        # it was taken for an id from the future and resumed after the newest event, skipping both.
        resumed = sockets(s.entry, token, last_event_id=before[-1].event_id)
        assert_delivered(resumed, since)
