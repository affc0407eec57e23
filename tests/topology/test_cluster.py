"""VORA's Redis client and store on a real three-master Redis Cluster."""

from __future__ import annotations

import contextlib
import uuid
from typing import cast

import pytest
from redis.cluster import RedisCluster

from tests.harness import RedisCluster3
from vora.store import keys
from vora.store.client import connect, parse_redis_url
from vora.store.directory import Directory
from vora.store.push import HoldUp, HoldUpRef, PushRegistration, PushStore
from vora.store.sessions import NewSession, NotOwner, SessionStore, SetupRate, SetupRateLimited
from vora.store.streams import Append, Appended, StreamStore

pytestmark = [pytest.mark.topology, pytest.mark.slow]


def test_cluster_url_parses_to_its_three_nodes(redis_cluster: RedisCluster3) -> None:
    """The harness's redis+cluster:// URL names the three nodes VORA will bootstrap from."""
    target = parse_redis_url(redis_cluster.url)
    assert target.kind == "cluster"
    assert target.hosts == tuple(("127.0.0.1", port) for port in redis_cluster.ports)


def test_connect_returns_a_working_cluster_client(redis_cluster: RedisCluster3) -> None:
    """connect() on the cluster URL writes and reads keys that land on all three masters."""
    client = connect(redis_cluster.url, timeout=2.0)
    with contextlib.closing(client):
        assert isinstance(client, RedisCluster)
        run = uuid.uuid4().hex
        names = [f"topology:{run}:{i}" for i in range(48)]
        for i, name in enumerate(names):
            assert client.set(name, str(i), ex=60)
        assert [client.get(name) for name in names] == [str(i).encode() for i in range(len(names))]
        slots = {client.keyslot(name) for name in names}
        owners = {client.get_node_from_key(name).port for name in names}
        assert len(slots) > 3
        assert owners == set(redis_cluster.ports)
        for node in redis_cluster.nodes:  # each master really holds some of them
            assert int(node.execute("DBSIZE")) > 0
        with contextlib.closing(redis_cluster.client()) as independent:
            assert independent.get(names[-1]) == str(len(names) - 1)


def test_readiness_probe_options_work_on_the_cluster(redis_cluster: RedisCluster3) -> None:
    """The no-retry client the app builds for its readiness probe also works on a cluster URL."""
    probe = connect(redis_cluster.url, 1.0, retry=None, retry_on_error=[])
    with contextlib.closing(probe):
        assert probe.ping()


def test_session_store_scripts_run_in_one_slot(redis_cluster: RedisCluster3) -> None:
    """The session scripts, admission included, derive keys from the identity's hash tag and run on the cluster."""
    client = connect(redis_cluster.url, timeout=2.0)
    with contextlib.closing(client):
        store = SessionStore(client, ttl_seconds=60, max_per_user=1)
        directory = Directory(client)
        identity = f"49{uuid.uuid4().int % 10**9}"
        directory.add("alice", [identity])
        assert directory.identities_of("alice") == [identity]
        new = NewSession("alice", "WebSocket", False, frozenset(), "*")
        assert store.create(identity=identity, session_id="s1", token_hash="h1", new=new).evicted == []
        store.admit(identity, "h1", "k0", 1_000, 10_000, resuming=False)  # a session a socket joined: a tombstone
        assert store.create(identity=identity, session_id="s2", token_hash="h2", new=new).evicted == ["s1"]
        stranger = NewSession("mallory", "WebSocket", False, frozenset(), "*")
        with pytest.raises(NotOwner):  # asked apart from the script: the user's set is in another slot
            store.create(identity=identity, session_id="s3", token_hash="h3", new=stranger)
        assert store.get(identity, "s3") is None
        assert store.ended_reason(identity, "s1") == "replaced"
        admitted = store.admit(identity, "h2", "k1", 1_000, 10_000, resuming=True)
        assert admitted.session is not None
        assert admitted.session.session_id == "s2"
        assert store.set_subscription(identity, "alice", "CALLS") == ["s2"]
        assert store.end_for_subject(identity, "alice", "logout") == ["s2"]
        assert store.get(identity, "s2") is None
        cluster = cast(RedisCluster, client)  # connect() returns the cluster client typed as a Redis
        slot = cluster.keyslot(keys.sessions_index(identity))
        assert cluster.keyslot(keys.session(identity, "s2")) == slot


def test_push_store_runs_on_the_cluster(redis_cluster: RedisCluster3) -> None:
    """Every push-store step works on the cluster: the {push} keys in one slot, hold-ups in the identity's."""
    client = connect(redis_cluster.url, timeout=2.0)
    with contextlib.closing(client):
        store = PushStore(client)
        identity = f"49{uuid.uuid4().int % 10**9}"
        cluster = cast(RedisCluster, client)  # connect() returns the cluster client typed as a Redis
        assert cluster.keyslot(keys.PUSH_JOBS) == cluster.keyslot(keys.PUSH_DEADLINES)
        sessions = SessionStore(client, ttl_seconds=60, max_per_user=2)
        push = PushRegistration("fcm", "d")
        Directory(client).add("alice", [identity])
        sessions.create(identity, "s1", "t" * 64, NewSession("alice", "WebSocket", True, frozenset(), "*", push))
        assert list(store.push_targets(identity)) == ["s1"]

        store.ensure_group()
        job_id = store.enqueue("ring", identity=identity)
        assert job_id in {j.job_id for j in store.read("a", 100, 10) + store.claim_abandoned("a", 0, 100)}
        store.touch("a", job_id)
        store.ack(job_id)

        ref = HoldUpRef(identity, "s1", "c-1")
        store.hold_up(ref, HoldUp("1-1", 1, 2), 60_000)
        assert store.mark(ref, "pushedAt", 1)
        assert store.queue_due_deadlines(10, 100) >= 1
        [(taken, holdup)] = store.take(identity, "s1", "job", "holdUpNotReady", 3, "c-1", "timeout")
        assert (taken, holdup.reason) == (ref, "timeout")
        store.settle(ref, 4)
        assert store.count_push(identity, 1, 60_000)
        assert not store.count_push(identity, 1, 60_000)


def test_setup_limits_hold_on_the_cluster(redis_cluster: RedisCluster3) -> None:
    """On Cluster the user's limit is counted with the ownership check, the identity's in setup's script."""
    client = connect(redis_cluster.url, timeout=2.0)
    with contextlib.closing(client):
        store = SessionStore(client, ttl_seconds=60, max_per_user=50, setup_rate=SetupRate(2, 3, 60))
        identity = f"48{uuid.uuid4().int % 10**9}"
        user, other = f"u-{uuid.uuid4().hex}", f"v-{uuid.uuid4().hex}"
        Directory(client).add(user, [identity])
        Directory(client).add(other, [identity])
        new = NewSession(user, "WebSocket", False, frozenset(), "*")
        store.create(identity, "s1", "h1", new)
        store.create(identity, "s2", "h2", new)
        with pytest.raises(SetupRateLimited) as by_user:
            store.create(identity, "s3", "h3", new)
        assert by_user.value.scope == "user"
        assert store.get(identity, "s3") is None
        store.create(identity, "o1", "g1", NewSession(other, "WebSocket", False, frozenset(), "*"))
        with pytest.raises(SetupRateLimited) as by_identity:
            store.create(identity, "o2", "g2", NewSession(other, "WebSocket", False, frozenset(), "*"))
        assert by_identity.value.scope == "identity"


def test_a_batch_of_appends_runs_on_every_master_and_a_keyed_retry_finds_each_event(
    redis_cluster: RedisCluster3,
) -> None:
    """append_many sends each event to its identity's master, reloads scripts a master forgot, and dedupes retries."""
    client = connect(redis_cluster.url, timeout=2.0)
    with contextlib.closing(client):
        cluster = cast(RedisCluster, client)
        store = StreamStore(client, max_length=100, max_age_seconds=3600)
        run = uuid.uuid4().int % 10**6
        owners: dict[int, str] = {}
        for n in range(1000):  # one identity on each master
            identity = f"47{run:06d}{n:03d}"
            owners.setdefault(cluster.get_node_from_key(keys.event_stream(identity)).port, identity)
            if len(owners) == len(redis_cluster.nodes):
                break
        identities = list(owners.values())
        events = [
            Append(identity, "presence", "2026-12-07T08:00:00.000Z", '{"status":"busy"}', f"k-{identity}", "f")
            for identity in identities
        ]

        first = store.append_many(events, 60_000)
        for node in redis_cluster.nodes:
            node.execute("SCRIPT", "FLUSH")  # a restarted master: the retry meets NOSCRIPT everywhere
        again = store.append_many(events, 60_000)

        assert all(isinstance(result, Appended) and not result.duplicate for result in first), first
        assert all(isinstance(result, Appended) and result.duplicate for result in again), again
        assert [cast(Appended, r).event_id for r in again] == [cast(Appended, r).event_id for r in first]
        assert [cluster.xlen(keys.event_stream(identity)) for identity in identities] == [1] * len(identities)
