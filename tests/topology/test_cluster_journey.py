"""The whole client journey with VORA on a three-master Redis Cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from redis import Redis
from redis.cluster import RedisCluster

from testbed.vora_server import RunningServer, running_server
from tests.harness import RedisCluster3, RedisServer, wait_for
from tests.harness.journey import (
    Api,
    Entry,
    assert_delivered,
    assert_no_server_errors,
    assert_unavailable,
    readiness,
    vora_cli,
    wait_ready,
)
from tests.harness.tokens import TokenFactory
from tests.harness.topology import EnvFactory, Sockets
from tests.harness.ws_client import make_publisher
from vora.events.publisher import EventPublisher, PublishedEvent
from vora.sessions.service import hash_token
from vora.store import keys
from vora.store.client import connect
from vora.store.directory import Directory

pytestmark = [pytest.mark.topology, pytest.mark.slow]

USER = "carol"


def identities_on_every_master(cluster: RedisCluster, masters: int) -> list[str]:
    """Pick one identity per master: every key of an identity lives in the slot of its hash tag."""
    chosen: dict[int, str] = {}
    for n in range(10_000):
        identity = f"91011{n:04d}"
        port = cluster.get_node_from_key(keys.sessions_index(identity)).port
        chosen.setdefault(port, identity)
        if len(chosen) == masters:
            return [chosen[port] for port in sorted(chosen)]
    raise AssertionError("no identities cover every master")


@pytest.fixture(scope="module")
def cluster_server(
    redis_cluster: RedisCluster3, make_env: EnvFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Serve VORA with two workers on the cluster, renewing the leases of open sockets often."""
    env = make_env(redis_cluster.url, ws_heartbeat_interval="5", session_ttl="5", ws_lease_interval="0.2")
    with running_server(env, tmp_path_factory.mktemp("cluster-server"), workers=2) as server:
        yield server


@pytest.fixture(scope="module")
def cluster_publisher(redis_cluster: RedisCluster3) -> Iterator[EventPublisher]:
    """Publish events through a cluster client, the way the telephony side does."""
    client = connect(redis_cluster.url, timeout=2.0)
    with contextlib.closing(client):
        yield make_publisher(client)


def test_client_journey_on_redis_cluster(
    redis_cluster: RedisCluster3,
    cluster_server: RunningServer,
    cluster_publisher: EventPublisher,
    make_env: EnvFactory,
    make_token: TokenFactory,
    sockets: Sockets,
) -> None:
    """Provisioning, setup, delivery, subscription, resume and logout all work with identities on every master."""
    entry = Entry.of(cluster_server)
    with contextlib.closing(redis_cluster.client()) as admin:
        identities = identities_on_every_master(admin, len(redis_cluster.nodes))
        owners = {admin.get_node_from_key(keys.event_stream(i)).port for i in identities}
    assert owners == set(redis_cluster.ports)

    printed = vora_cli(make_env(redis_cluster.url), "identities", "add", USER, *identities)
    assert printed.strip() == f"{USER}: 3 added, 0 already there"
    assert readiness(entry) == 204
    api = Api(entry, make_token(USER))
    listed = api.identities()
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"identities": sorted(identities)}

    tokens = {identity: api.setup(identity) for identity in identities}
    clients = {identity: sockets(entry, tokens[identity]) for identity in identities}

    # The lease greenlet's pipeline spans the three masters: it puts back the TTL of every open session.
    with contextlib.closing(redis_cluster.client()) as admin:
        token_keys = [keys.websocket_token(i, hash_token(tokens[i])) for i in identities]
        for key in token_keys:
            admin.pexpire(key, 2000)
        wait_for(
            lambda: all(admin.pttl(key) > 3000 for key in token_keys),  # type: ignore[operator] # redis-py types sync replies as Awaitable | Any
            5.0,
            what="the lease to renew every open session",
        )

    # Interleaved publishing: each socket gets its own identity's events, in order, numbered 1, 2, 3...
    published: dict[str, list[PublishedEvent]] = {identity: [] for identity in identities}
    for n in range(4):
        for identity in identities:
            published[identity].append(cluster_publisher.publish(identity, "callRinging", {"callId": f"c-{n}"}))
    for identity in identities:
        assert_delivered(clients[identity], published[identity])
        assert [p.sequence_number for p in published[identity]] == [1, 2, 3, 4]

    # A subscription change reaches the open socket through the control channel.
    first, *others = identities
    api.subscribe(first, ["callRinging"])
    cluster_publisher.publish(first, "presence", {"status": "busy"})
    wanted = cluster_publisher.publish(first, "callRinging", {"callId": "after-subscription"})
    assert_delivered(clients[first], [wanted])
    for identity in others:
        assert_delivered(clients[identity], [cluster_publisher.publish(identity, "presence", {"status": "away"})])

    # A reconnecting client gets exactly what it missed that its subscription admits, then the live stream.
    clients[first].close()
    missed = []
    for n in range(3):
        cluster_publisher.publish(first, "presence", {"status": "busy"})
        missed.append(cluster_publisher.publish(first, "callRinging", {"callId": f"missed-{n}"}))
    clients[first] = sockets(entry, tokens[first], last_event_id=wanted.event_id)
    live = cluster_publisher.publish(first, "callRinging", {"callId": "live"})
    assert_delivered(clients[first], [*missed, live])

    # Logout closes each socket after channelTerminated(logout); the other identities' sockets carry on.
    for position, identity in enumerate(identities):
        api.logout(identity)
        terminated = clients[identity].next()
        assert terminated["type"] == "channelTerminated"
        assert terminated["data"] == {"reason": "logout"}
        assert terminated["identity"] == identity
        assert clients[identity].close_status() == 1000
        for other in identities[position + 1 :]:
            assert_delivered(clients[other], [cluster_publisher.publish(other, "callEnded", {"callId": "c-0"})])
    assert_no_server_errors(cluster_server)


def cluster_state(node: RedisServer) -> str:
    """Return what a node says of the whole cluster: ok or fail."""
    info = str(node.execute("CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in info.split() if ":" in line)["cluster_state"]


def test_cluster_outage_answers_503_and_recovers_without_restart(
    make_env: EnvFactory, make_token: TokenFactory, sockets: Sockets, tmp_path: Path
) -> None:
    """While masters are down REST answers 503 (never 500) and sockets stay open; once back, nothing is lost."""
    persistent = ["--appendonly", "yes", "--appendfsync", "always"]
    with (
        RedisCluster3(node_timeout_ms=1000, extra_args=persistent) as cluster,
        running_server(make_env(cluster.url, ws_heartbeat_interval="0.5"), tmp_path) as server,
        contextlib.closing(cluster.client()) as admin,
        contextlib.closing(connect(cluster.url, timeout=2.0)) as publisher_client,
    ):
        entry = Entry.of(server)
        publisher = make_publisher(publisher_client)
        # The first victim is the master the hub's subscription lives on; the identities live on the others.
        bus_port = admin.get_node_from_key(keys.EVENTS_CHANNEL).port
        victim = next(node for node in cluster.nodes if node.port == bus_port)
        survivors = [node for node in cluster.nodes if node is not victim]
        identities = [
            i
            for i in identities_on_every_master(admin, len(cluster.nodes))
            if admin.get_node_from_key(keys.sessions_index(i)).port != bus_port
        ]
        assert len(identities) == 2
        Directory(cast(Redis, admin)).add(USER, identities)  # vora.store.client.connect casts the same way
        api = Api(entry, make_token(USER))
        tokens = {identity: api.setup(identity) for identity in identities}
        clients = {identity: sockets(entry, tokens[identity]) for identity in identities}
        seen = {identity: publisher.publish(identity, "callRinging", {"callId": "before"}) for identity in identities}
        for identity in identities:
            assert_delivered(clients[identity], [seen[identity]])

        # One master down: every answer is a success or a 503 until the cluster says it is down, then 503.
        victim.kill()

        def cluster_failed() -> bool:
            # Idempotent calls only: a setup that succeeds would open (and evict) sessions.
            for response in (api.try_subscribe(identities[0]), api.identities()):
                assert response.status_code in {200, 503}, response.text
            assert readiness(entry) in {204, 503}
            return all(cluster_state(node) == "fail" for node in survivors)

        wait_for(cluster_failed, 15.0, what="the surviving masters to declare the cluster down")
        assert_unavailable(api.try_subscribe(identities[0]))
        assert_unavailable(api.try_setup(identities[0]))

        # Every master down: still 503, readiness 503, and the sockets stay open.
        for node in survivors:
            node.kill()
        assert_unavailable(api.try_setup(identities[0]))
        assert readiness(entry) == 503
        for identity in identities:
            assert clients[identity].next(skip=())["type"] == "heartbeat"

        # The masters come back with their data; VORA recovers without a restart.
        for node in cluster.nodes:
            node.start()
        cluster.wait_ok()
        wait_ready(entry, 15.0)
        for identity in identities:
            after = publisher.publish(identity, "callRinging", {"callId": "after"})
            assert_delivered(clients[identity], [after])
            seen[identity] = after

        first = identities[0]
        clients[first].close()
        missed = [publisher.publish(first, "callHeld", {"callId": f"missed-{n}"}) for n in range(3)]
        clients[first] = sockets(entry, tokens[first], last_event_id=seen[first].event_id)
        assert_delivered(clients[first], missed)
        assert_delivered(clients[first], [publisher.publish(first, "callEnded", {"callId": "live"})])
        assert_no_server_errors(server, redis_was_lost=True)
