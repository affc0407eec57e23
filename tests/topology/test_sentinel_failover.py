"""VORA behind three Sentinels while the master dies and the replica is promoted."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from testbed.vora_server import running_server
from tests.harness import RedisSentinelSet, wait_for
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
from tests.harness.ws_client import make_publisher
from vora.store import keys
from vora.store.client import connect
from vora.store.directory import Directory

pytestmark = [pytest.mark.topology, pytest.mark.slow]

USER = "dave"
IDENTITY = "910222000"
FAILOVER_TIMEOUT = 30.0


def wait_replicated(sentinel_set: RedisSentinelSet) -> None:
    """Wait until the replica has applied everything the master has written so far."""
    written = int(sentinel_set.master.info("replication")["master_repl_offset"])
    wait_for(
        lambda: int(sentinel_set.replica.info("replication").get("slave_repl_offset", -1)) >= written,
        10.0,
        what="the replica to catch up with the master",
    )


def test_failover_keeps_sockets_open_and_loses_nothing_replicated(
    fresh_sentinel_set: RedisSentinelSet,
    make_env: EnvFactory,
    make_token: TokenFactory,
    sockets: Sockets,
    tmp_path: Path,
) -> None:
    """REST answers 503 or succeeds during a failover, readiness returns, sockets keep and resume their events."""
    sentinel_set = fresh_sentinel_set
    env = make_env(sentinel_set.url, ws_heartbeat_interval="0.5")
    with (
        running_server(env, tmp_path) as server,
        contextlib.closing(connect(sentinel_set.url, timeout=2.0)) as client,
    ):
        entry = Entry.of(server)
        publisher = make_publisher(client)
        Directory(client).add(USER, [IDENTITY])
        api = Api(entry, make_token(USER))
        token = api.setup(IDENTITY)
        listener = sockets(entry, token)
        before = [publisher.publish(IDENTITY, "callRinging", {"callId": f"before-{n}"}) for n in range(3)]
        assert_delivered(listener, before)

        wait_replicated(sentinel_set)
        killed = sentinel_set.kill_master()
        # While the sentinels elect a new master: 503 in the error shape or success, never 500; the socket
        # stays open and its heartbeats keep coming (each read paces this loop).
        outcomes: set[int] = set()

        def promoted() -> bool:
            response = api.identities()
            outcomes.add(response.status_code)
            if response.status_code != 200:
                assert_unavailable(response)
            assert readiness(entry) in {204, 503}
            assert listener.next(skip=())["type"] == "heartbeat"
            addresses = set(sentinel_set.master_addresses())
            return len(addresses) == 1 and killed not in addresses and None not in addresses

        wait_for(promoted, FAILOVER_TIMEOUT, what="the sentinels to agree on a new master", ignore=())
        assert sentinel_set.wait_for_failover(FAILOVER_TIMEOUT) != killed
        assert 503 in outcomes, outcomes

        # Without restarting VORA: ready again, and the open socket receives what is published now.
        wait_ready(entry, 20.0)
        assert api.identities().json() == {"identities": [IDENTITY]}
        after = [publisher.publish(IDENTITY, "callAnswered", {"callId": f"after-{n}"}) for n in range(2)]
        assert_delivered(listener, after)

        # A client resuming from the first event gets the replicated ones and the new ones, each once.
        resumed = sockets(entry, token, last_event_id=before[0].event_id)
        assert_delivered(resumed, [*before[1:], *after])
        live = publisher.publish(IDENTITY, "callEnded", {"callId": "live"})
        assert_delivered(resumed, [live])
        assert_delivered(listener, [live])
        assert [e["sequenceNumber"] for e in listener.received if e["eventId"]] == list(range(1, 7))
        assert_no_server_errors(server, redis_was_lost=True)


SERVER_KEY = "srv-failover-key-0123456789abcdefghijklmnop"
# Bounds of the publishing loop: the old master is demoted within Sentinel's 10 s INFO period.
PLANNED_SWITCH_DEADLINE = 40.0
MOST_PUBLISHES = 20_000


def test_planned_failover_loses_no_acknowledged_event_with_default_settings(
    fresh_sentinel_set: RedisSentinelSet, make_env: EnvFactory, tmp_path: Path
) -> None:
    """Through SENTINEL FAILOVER with default settings, every event the server API acknowledged survives it."""
    sentinel_set = fresh_sentinel_set
    old_master = sentinel_set.master
    env = make_env(sentinel_set.url, server_api_keys=SERVER_KEY)  # VORA_PUBLISH_MIN_REPLICAS left unset
    with running_server(env, tmp_path) as server, requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {SERVER_KEY}"
        url = f"{server.server_api_url}/identities/{IDENTITY}/events"
        acknowledged: list[str] = []
        refused: list[int] = []

        def publish(number: int) -> None:
            response = http.post(url, json={"type": "callRinging", "data": {"callId": f"c-{number}"}}, timeout=10)
            if response.status_code == 200:
                acknowledged.append(response.json()["eventId"])
            else:
                assert response.status_code == 503, response.text  # not replicated, or Redis switching
                refused.append(number)

        for number in range(20):
            publish(number)
        assert len(acknowledged) == 20
        wait_replicated(sentinel_set)
        sentinel_set.sentinels[0].execute("SENTINEL", "FAILOVER", sentinel_set.service, timeout=5.0)

        def demoted() -> bool:
            try:
                info = old_master.info("replication")
            except redis.ConnectionError:  # the old master drops its clients as it turns into a replica
                return False
            return info.get("role") == "slave" and info.get("master_link_status") == "up"

        # Publish one event after the other until the old master has been demoted and resynchronised:
        # that is when a write it acknowledged alone is dropped.
        started, number = time.monotonic(), 20
        while not demoted():
            assert time.monotonic() - started < PLANNED_SWITCH_DEADLINE, "the old master was never demoted"
            assert number < MOST_PUBLISHES
            publish(number)
            number += 1
        new_master = next(s for s in sentinel_set.servers if s is not old_master)

        def publishes_again() -> bool:
            count = len(acknowledged)
            publish(len(acknowledged) + len(refused))
            return len(acknowledged) > count

        wait_for(publishes_again, 20.0, what="a publish to succeed once the old master follows the new one")
        with contextlib.closing(new_master.client()) as client:
            entries: list[Any] = client.xrange(keys.event_stream(IDENTITY))  # type: ignore[assignment] # redis-py types sync replies as Awaitable | Any
        kept = {event_id for event_id, _ in entries}
        lost = [event_id for event_id in acknowledged if event_id not in kept]
        assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged events lost ({len(refused)} refused)"
        assert refused, "the switch refused nothing: the test did not publish through it"
