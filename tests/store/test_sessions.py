"""Tests of the session scripts against a real Redis."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from tests.harness import RedisServer
from tests.harness.processes import frozen
from tests.harness.store import IDENTITY, create
from vora.store import keys
from vora.store.batching import CommandBatcher
from vora.store.client import connect
from vora.store.directory import Directory
from vora.store.sessions import (
    Attached,
    IdentityFull,
    Lease,
    NewSession,
    NotOwner,
    SessionStore,
    SetupRate,
    SetupRateLimited,
)

pytestmark = pytest.mark.usefixtures("owners")


def attach(store: SessionStore, sid: str, socket_id: str, now_ms: int, lease_ms: int) -> Attached:
    """Admit a socket, not resuming, with the token hash create() gave a session; return the attach outcome."""
    return store.admit(IDENTITY, f"hash-{sid}", socket_id, now_ms, lease_ms, resuming=False).attached


def test_create_writes_session_token_and_index(redisdb: redis.Redis) -> None:
    """A created session has its hash, token key and index entry, all with a TTL."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    assert create(store, "s1") == []
    assert redisdb.hget(keys.session(IDENTITY, "s1"), "sub") == b"alice"  # type: ignore[comparison-overlap] # redis-py types sync replies as Awaitable | Any
    assert redisdb.get(keys.websocket_token(IDENTITY, "hash-s1")) == b"s1"
    for key in [keys.session(IDENTITY, "s1"), keys.websocket_token(IDENTITY, "hash-s1"), keys.sessions_index(IDENTITY)]:
        assert 0 < redisdb.pttl(key) <= 60_000  # type: ignore[operator] # redis-py types sync replies as Awaitable | Any


def test_create_refuses_a_user_who_does_not_own_the_identity_and_writes_nothing(redisdb: redis.Redis) -> None:
    """A session for an identity the user does not own is refused inside the script, before any write."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=1)
    create(store, "a")
    before = sorted(redisdb.scan_iter(count=1000))
    with pytest.raises(NotOwner):
        create(store, "b", "mallory")
    assert sorted(redisdb.scan_iter(count=1000)) == before
    assert redisdb.exists(keys.session(IDENTITY, "a"))


def test_a_revoked_identity_refuses_new_sessions(redisdb: redis.Redis) -> None:
    """Once the directory no longer gives the user the identity, the next session is refused."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "a")
    Directory(redisdb).remove("alice", [IDENTITY])
    with pytest.raises(NotOwner):
        create(store, "b")


def test_create_through_a_batcher_loads_the_script_when_redis_lost_it(redisdb: redis.Redis, redis_url: str) -> None:
    """A store whose scripts go through the batcher creates sessions, also after Redis forgot every script."""
    batcher = CommandBatcher(connect(redis_url, 2.0, 4, 0.5), wait_timeout=5.0)
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=1, batcher=batcher)
    assert create(store, "a") == []
    redisdb.script_flush()
    assert create(store, "b") == ["a"]
    assert batcher.commands == 2
    with pytest.raises(NotOwner):
        create(store, "c", "mallory")


def test_expired_sessions_leave_the_index_before_the_cap_counts(redisdb: redis.Redis) -> None:
    """An index entry whose session expired is dropped instead of evicting a live session."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=2)
    create(store, "old")
    create(store, "live")
    redisdb.delete(keys.session(IDENTITY, "old"))
    assert create(store, "new") == []
    assert sorted(redisdb.zrange(keys.sessions_index(IDENTITY), 0, -1)) == [b"live", b"new"]  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any


def test_eviction_takes_the_oldest_and_leaves_a_tombstone(redisdb: redis.Redis) -> None:
    """Past the cap the oldest session goes, with its token, and its tombstone says replaced."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=2)
    create(store, "a")
    attach(store, "a", "k1", 1_000, 10_000)
    create(store, "b")
    assert create(store, "c") == ["a"]
    assert not redisdb.exists(keys.session(IDENTITY, "a"), keys.websocket_token(IDENTITY, "hash-a"))
    assert store.ended_reason(IDENTITY, "a") == "replaced"
    assert 0 < int(redisdb.pttl(keys.session_ended(IDENTITY, "a"))) <= 120_000  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any


def test_a_session_no_socket_ever_joined_leaves_no_tombstone(redisdb: redis.Redis) -> None:
    """Ending a session that never admitted a socket leaves no key behind: only a socket's lease reads one."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=1)
    for number in range(50):
        create(store, f"s{number}")
    store.end_for_subject(IDENTITY, "alice", "logout")
    assert list(redisdb.scan_iter(match="*ended*")) == []


def next_control_notice(subscriber: redis.client.PubSub, redisdb: redis.Redis) -> bytes:
    """Return the first control notice after what the test did, or the marker this publishes behind it."""
    redisdb.publish(keys.CONTROL_CHANNEL, b"marker")  # one subscriber gets messages in publish order
    message = subscriber.get_message(timeout=5)
    assert message is not None
    return bytes(message["data"])


def test_eviction_announces_only_sessions_a_socket_was_admitted_to(redisdb: redis.Redis) -> None:
    """Evicting sessions announces those that ever admitted a socket and stays silent about the rest."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=2)
    create(store, "never-connected")
    create(store, "connected")
    assert attach(store, "connected", "k1", 1_000, 10_000) is Attached.FIRST
    subscriber = redisdb.pubsub()
    subscriber.subscribe(keys.CONTROL_CHANNEL)
    assert subscriber.get_message(timeout=5)["type"] == "subscribe"
    assert create(store, "c") == ["never-connected"]
    assert next_control_notice(subscriber, redisdb) == b"marker"
    assert create(store, "d") == ["connected"]
    notice = next_control_notice(subscriber, redisdb)
    subscriber.close()
    assert json.loads(notice) == {
        "action": "terminate",
        "identity": IDENTITY,
        "sessions": ["connected"],
        "reason": "replaced",
    }


def test_eviction_takes_the_callers_oldest_never_another_users(redisdb: redis.Redis) -> None:
    """The cap counts one user's sessions on the identity: past it that user's oldest goes, a co-owner's stays."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=2)
    create(store, "bob-1", "bob")
    create(store, "alice-1")
    attach(store, "alice-1", "k1", 1_000, 10_000)
    create(store, "alice-2")
    assert create(store, "alice-3") == ["alice-1"]
    assert create(store, "bob-2", "bob") == []
    assert store.get(IDENTITY, "bob-1") is not None
    assert store.ended_reason(IDENTITY, "alice-1") == "replaced"


def test_identity_total_refuses_a_new_user_and_writes_nothing(redisdb: redis.Redis) -> None:
    """At the per-identity total a user with nothing to evict is refused and nothing is written."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=2, max_per_identity=3)
    create(store, "alice-1")
    create(store, "alice-2")
    create(store, "bob-1", "bob")
    before = sorted(redisdb.scan_iter())
    with pytest.raises(IdentityFull):
        create(store, "carol-1", "carol")
    assert sorted(redisdb.scan_iter()) == before
    assert create(store, "alice-3") == ["alice-1"]  # a user at its own cap still replaces its oldest


def test_end_for_subject_ends_only_that_users_sessions(redisdb: redis.Redis) -> None:
    """Ending alice's sessions leaves bob's on the same identity."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "a1", "alice")
    attach(store, "a1", "k1", 1_000, 10_000)
    create(store, "b1", "bob")
    assert store.end_for_subject(IDENTITY, "alice", "logout") == ["a1"]
    assert store.get(IDENTITY, "a1") is None
    assert store.get(IDENTITY, "b1") is not None
    assert store.ended_reason(IDENTITY, "a1") == "logout"
    assert store.end_for_subject(IDENTITY, "alice", "logout") == []


def test_admit_reads_the_tokens_session_and_attaches_in_one_script(redisdb: redis.Redis) -> None:
    """A known token hash admits its socket with the session as stored; an unknown one writes nothing."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "s1")
    admitted = store.admit(IDENTITY, "hash-s1", "k1", 1_000, 10_000, resuming=False)
    assert admitted.attached is Attached.FIRST
    assert admitted.session == store.get(IDENTITY, "s1")
    assert admitted.session is not None
    assert (admitted.session.subject, admitted.session.events) == ("alice", "*")
    assert store.open_sockets(IDENTITY, 2_000) == {"s1": 1}
    unknown = store.admit(IDENTITY, "hash-unknown", "k2", 1_000, 10_000, resuming=True)
    assert (unknown.attached, unknown.session) == (Attached.GONE, None)
    assert store.open_sockets(IDENTITY, 2_000) == {"s1": 1}


def test_admit_refuses_a_token_whose_session_expired_and_writes_nothing(redisdb: redis.Redis) -> None:
    """A token key left without its session hash is GONE: no presence entry, no session hash recreated."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "s1")
    redisdb.delete(keys.session(IDENTITY, "s1"))
    assert store.admit(IDENTITY, "hash-s1", "k1", 1_000, 10_000, resuming=False).attached is Attached.GONE
    assert not redisdb.exists(keys.session(IDENTITY, "s1"), keys.socket_presence(IDENTITY))


def test_admit_reads_the_clock_only_when_resuming(redisdb: redis.Redis) -> None:
    """Every admission reads the oldest and newest entries and the counter; only resuming reads Redis' clock."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "s1")
    redis_ms = int(redisdb.time()[0]) * 1000  # type: ignore[index] # redis-py types sync replies as Awaitable | Any
    empty = store.admit(IDENTITY, "hash-s1", "k1", 1_000, 10_000, resuming=True)
    assert (empty.oldest_id, empty.published, empty.newest_id) == (None, None, None)
    assert empty.now_ms is not None
    assert redis_ms <= empty.now_ms < redis_ms + 60_000
    redisdb.set(keys.event_sequence(IDENTITY), 7)
    aged_out = store.admit(IDENTITY, "hash-s1", "k2", 1_000, 10_000, resuming=True)
    assert (aged_out.oldest_id, aged_out.published, aged_out.newest_id) == (None, 7, None)
    redisdb.xadd(keys.event_stream(IDENTITY), {"seq": "8"}, id="5-8")
    redisdb.xadd(keys.event_stream(IDENTITY), {"seq": "9"}, id="6-9")
    redisdb.set(keys.event_sequence(IDENTITY), 9)
    resumed = store.admit(IDENTITY, "hash-s1", "k3", 1_000, 10_000, resuming=True)
    assert (resumed.attached, resumed.oldest_id, resumed.published, resumed.newest_id) == (
        Attached.LATER,
        "5-8",
        9,
        "6-9",
    )
    live = store.admit(IDENTITY, "hash-s1", "k4", 1_000, 10_000, resuming=False)
    assert (live.oldest_id, live.published, live.newest_id, live.now_ms) == ("5-8", 9, "6-9", None)
    assert (resumed.preceding_id, live.preceding_id) == (None, None)


def test_admit_reads_the_entry_before_the_session_for_a_first_socket_that_does_not_resume(
    redisdb: redis.Redis,
) -> None:
    """The first socket of a session starts at the session's creation: its admission reads the newest entry before."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "s1")
    created = int(redisdb.hget(keys.session(IDENTITY, "s1"), "createdAt"))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any
    redisdb.xadd(keys.event_stream(IDENTITY), {"seq": "1"}, id="5-1")
    redisdb.xadd(keys.event_stream(IDENTITY), {"seq": "2"}, id=f"{created - 1}-2")
    redisdb.xadd(keys.event_stream(IDENTITY), {"seq": "3"}, id=f"{created}-3")
    first = store.admit(IDENTITY, "hash-s1", "k1", 1_000, 10_000, resuming=False)
    assert (first.attached, first.oldest_id, first.newest_id) == (Attached.FIRST, "5-1", f"{created}-3")
    assert first.preceding_id == f"{created - 1}-2"
    create(store, "s2")
    redisdb.delete(keys.event_stream(IDENTITY))
    empty = store.admit(IDENTITY, "hash-s2", "k2", 1_000, 10_000, resuming=False)
    assert (empty.attached, empty.preceding_id, empty.oldest_id) == (Attached.FIRST, None, None)


def test_set_subscription_touches_only_the_subjects_sessions(redisdb: redis.Redis) -> None:
    """A subscription change applies to the caller's sessions and reports them."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "a1", "alice")
    create(store, "b1", "bob")
    assert store.set_subscription(IDENTITY, "alice", "presence") == ["a1"]
    assert redisdb.hget(keys.session(IDENTITY, "a1"), "events") == b"presence"  # type: ignore[comparison-overlap] # redis-py types sync replies as Awaitable | Any
    assert redisdb.hget(keys.session(IDENTITY, "b1"), "events") == b"*"  # type: ignore[comparison-overlap] # redis-py types sync replies as Awaitable | Any


def test_session_of_token_reads_what_admission_would_and_writes_nothing(redisdb: redis.Redis) -> None:
    """A live token names its session; one whose session hash is gone, or an unknown one, names none."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "s1")
    create(store, "s2")
    redisdb.delete(keys.session(IDENTITY, "s2"))
    assert [store.session_of_token(IDENTITY, f"hash-{sid}") for sid in ("s1", "s2", "unknown")] == ["s1", None, None]
    assert not redisdb.hexists(keys.session(IDENTITY, "s1"), "attachedAt")
    assert not redisdb.exists(keys.socket_presence(IDENTITY))


def test_end_session_ends_one_and_reports_whether_it_was_there(redisdb: redis.Redis) -> None:
    """Ending one session leaves the user's others and is a no-op the second time."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "a1")
    attach(store, "a1", "k1", 1_000, 10_000)
    create(store, "a2")
    assert store.end_session(IDENTITY, "a1", "tokenExpired") is True
    assert store.end_session(IDENTITY, "a1", "tokenExpired") is False
    assert store.get(IDENTITY, "a2") is not None
    assert store.ended_reason(IDENTITY, "a1") == "tokenExpired"


def test_attach_tells_first_socket_from_later_ones(redisdb: redis.Redis) -> None:
    """The first socket of a session gets 1, later ones 2, and an unknown session 0 without creating it."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "s1")
    assert attach(store, "s1", "k1", 5, 1000) == 1
    assert attach(store, "s1", "k2", 6, 1000) == 2
    assert attach(store, "gone", "k3", 7, 1000) == 0
    assert not redisdb.exists(keys.session(IDENTITY, "gone"))


def test_open_sockets_counts_attached_sockets_per_session(redisdb: redis.Redis) -> None:
    """Attached sockets count per session until they detach; a refused attach never counts."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "s1")
    create(store, "s2")
    attach(store, "s1", "k1", 1_000, 10_000)
    attach(store, "s1", "k2", 1_000, 10_000)
    attach(store, "s2", "k3", 1_000, 10_000)
    attach(store, "gone", "k4", 1_000, 10_000)
    assert store.open_sockets(IDENTITY, 2_000) == {"s1": 2, "s2": 1}
    store.detach(IDENTITY, "s1", "k1")
    store.detach(IDENTITY, "s2", "k3")
    assert store.open_sockets(IDENTITY, 2_000) == {"s1": 1}
    assert 0 < redisdb.pttl(keys.socket_presence(IDENTITY)) <= 60_000  # type: ignore[operator] # redis-py types sync replies as Awaitable | Any


def test_a_socket_whose_lease_ran_out_no_longer_counts(redisdb: redis.Redis) -> None:
    """A socket left behind by an instance that died counts only until its lease deadline."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "s1")
    attach(store, "s1", "k1", 1_000, 5_000)
    assert store.open_sockets(IDENTITY, 5_999) == {"s1": 1}
    assert store.open_sockets(IDENTITY, 6_000) == {}


def test_renew_extends_sessions_and_sockets_and_reports_the_subscription(redisdb: redis.Redis) -> None:
    """Renewal moves each socket's deadline, drops dead instances' sockets, and tells which sessions are gone."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "s1")
    create(store, "s2")
    attach(store, "s1", "k1", 1_000, 5_000)
    attach(store, "s2", "dead", 1_000, 5_000)
    store.set_subscription(IDENTITY, "alice", "presence")
    redisdb.pexpire(keys.session(IDENTITY, "s1"), 5_000)
    leases = [Lease(IDENTITY, "s1", "hash-s1", ("k1",)), Lease(IDENTITY, "gone", "hash-gone", ("k9",))]
    assert store.renew(leases, 7_000, 5_000) == [(True, "presence"), (False, None)]
    assert redisdb.pttl(keys.session(IDENTITY, "s1")) > 5_000  # type: ignore[operator] # redis-py types sync replies as Awaitable | Any
    assert store.open_sockets(IDENTITY, 11_999) == {"s1": 1, "gone": 1}
    assert store.open_sockets(IDENTITY, 12_000) == {}


def test_created_at_comes_from_redis_time(redisdb: redis.Redis) -> None:
    """CreatedAt is Redis' clock in milliseconds, so it compares with stream ids."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    seconds, micros = redisdb.time()  # type: ignore[misc] # redis-py types sync replies as Awaitable | Any
    create(store, "s1")
    stored = store.get(IDENTITY, "s1")
    assert stored is not None
    assert abs(stored.created_at_ms - (seconds * 1000 + micros // 1000)) < 1000


def test_attach_refuses_a_socket_past_the_per_session_cap(redisdb: redis.Redis) -> None:
    """With the cap reached on a session, attach answers FULL and records nothing; other sessions are not affected."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5, max_sockets_per_session=2)
    create(store, "s1")
    create(store, "s2")
    assert attach(store, "s1", "k1", 1_000, 10_000) is Attached.FIRST
    assert attach(store, "s1", "k2", 1_000, 10_000) is Attached.LATER
    assert attach(store, "s1", "k3", 1_000, 10_000) is Attached.FULL
    assert attach(store, "s2", "k4", 1_000, 10_000) is Attached.FIRST
    assert store.open_sockets(IDENTITY, 2_000) == {"s1": 2, "s2": 1}
    store.detach(IDENTITY, "s1", "k1")
    assert attach(store, "s1", "k5", 1_000, 10_000) is Attached.LATER


def test_sockets_whose_lease_ran_out_do_not_count_toward_the_cap(redisdb: redis.Redis) -> None:
    """Sockets of an instance that died stop counting toward the cap once their lease deadline passes."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5, max_sockets_per_session=1)
    create(store, "s1")
    assert attach(store, "s1", "dead", 1_000, 5_000) is Attached.FIRST
    assert attach(store, "s1", "k1", 5_999, 5_000) is Attached.FULL
    assert attach(store, "s1", "k1", 6_000, 5_000) is Attached.LATER


def test_session_fields_round_trip_through_the_hash(redisdb: redis.Redis) -> None:
    """A session stored from NewSession reads back with the same subject, type, mode, scopes and subscription."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    new = NewSession("alice", "WebSocket", True, frozenset({"scope.vora.calls", "scope.vora.identities"}), "presence")
    store.create(IDENTITY, "s1", "hash-s1", new)
    stored = store.get(IDENTITY, "s1")
    assert stored is not None
    assert (stored.subject, stored.connection_type, stored.hold_up_mode, stored.scopes, stored.events) == (
        new.subject,
        new.connection_type,
        new.hold_up_mode,
        new.scopes,
        new.events,
    )


def test_ending_an_identity_ends_every_users_sessions_and_announces_it(redisdb: redis.Redis) -> None:
    """end_for_identity ends all sessions whoever opened them, leaves tombstones and publishes one notice."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "a", "alice")
    create(store, "b", "bob")
    attach(store, "b", "k1", 1_000, 10_000)
    subscriber = redisdb.pubsub()
    subscriber.subscribe(keys.CONTROL_CHANNEL)
    assert subscriber.get_message(timeout=5)["type"] == "subscribe"
    assert sorted(store.end_for_identity(IDENTITY, "revoked")) == ["a", "b"]
    notice = subscriber.get_message(timeout=5)
    subscriber.close()
    assert notice is not None
    assert b'"reason":"revoked"' in notice["data"]
    assert store.sessions_of(IDENTITY) == []
    assert store.ended_reason(IDENTITY, "b") == "revoked"
    assert not redisdb.exists(keys.websocket_token(IDENTITY, "hash-a"), keys.websocket_token(IDENTITY, "hash-b"))
    assert store.end_for_identity(IDENTITY, "revoked") == []


def test_an_empty_subject_ends_nothing(redisdb: redis.Redis) -> None:
    """end_for_subject with an empty subject does not reach the script's every-subject mode."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "a", "alice")
    assert store.end_for_subject(IDENTITY, "", "logout") == []
    assert [s.session_id for s in store.sessions_of(IDENTITY)] == ["a"]


def test_sessions_of_lists_live_sessions_oldest_first(redisdb: redis.Redis) -> None:
    """sessions_of reads every live session in creation order and skips index entries whose session expired."""
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    for sid in ("s1", "s2", "s3"):
        Directory(redisdb).add(f"user-{sid}", [IDENTITY])
        create(store, sid, subject=f"user-{sid}")
    redisdb.delete(keys.session(IDENTITY, "s2"))
    sessions = store.sessions_of(IDENTITY)
    assert [(s.session_id, s.subject) for s in sessions] == [("s1", "user-s1"), ("s3", "user-s3")]
    assert store.sessions_of("602128708") == []


def limited_store(redisdb: redis.Redis, per_user: int, per_identity: int, window: int = 60) -> SessionStore:
    """Return a store whose setups are limited per user and per identity."""
    return SessionStore(
        redisdb,
        ttl_seconds=60,
        max_per_user=50,
        max_per_identity=500,
        setup_rate=SetupRate(per_user, per_identity, window),
    )


def test_setup_limit_lets_a_burst_through_then_refuses_and_writes_nothing(redisdb: redis.Redis) -> None:
    """A limit of 3 a minute lets 3 setups through at once; the 4th is refused, writes nothing, says how long."""
    store = limited_store(redisdb, per_user=3, per_identity=100)
    for number in range(3):
        create(store, f"s{number}")
    before = {key: redisdb.dump(key) for key in redisdb.scan_iter()}
    with pytest.raises(SetupRateLimited) as refused:
        create(store, "s3")
    assert refused.value.scope == "user"
    assert 19_000 < refused.value.wait_ms <= 20_000  # one setup every 20 s once the burst is spent
    assert {key: redisdb.dump(key) for key in redisdb.scan_iter()} == before
    # Asking again does not push the moment further away: a refused setup stores nothing.
    with pytest.raises(SetupRateLimited) as again:
        create(store, "s4")
    assert again.value.wait_ms <= refused.value.wait_ms


def test_setup_limit_per_identity_counts_every_user(redisdb: redis.Redis) -> None:
    """The identity's limit counts all its users' setups together; each user still has its own."""
    redisdb.sadd(keys.user_identities("bob"), IDENTITY)
    store = limited_store(redisdb, per_user=2, per_identity=3)
    create(store, "a1", "alice")
    create(store, "a2", "alice")
    with pytest.raises(SetupRateLimited) as user_refused:
        create(store, "a3", "alice")
    assert user_refused.value.scope == "user"
    create(store, "b1", "bob")
    with pytest.raises(SetupRateLimited) as identity_refused:
        create(store, "b2", "bob")
    assert identity_refused.value.scope == "identity"


def test_a_stranger_cannot_spend_an_identitys_setup_limit(redisdb: redis.Redis) -> None:
    """Setups refused because the caller does not own the identity spend nothing of the identity's limit."""
    store = limited_store(redisdb, per_user=100, per_identity=1)
    for number in range(5):
        with pytest.raises(NotOwner):
            create(store, f"m{number}", "mallory")
    assert not redisdb.exists(keys.identity_setup_rate(IDENTITY))
    create(store, "a1", "alice")


def test_setup_limiter_keys_expire_once_the_window_has_refilled(redisdb: redis.Redis) -> None:
    """Each limiter is one small key that expires when the burst is whole again: nothing stays behind."""
    store = limited_store(redisdb, per_user=30, per_identity=120)
    create(store, "s1")
    user_ttl = int(redisdb.pttl(keys.user_setup_rate("alice")))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any
    identity_ttl = int(redisdb.pttl(keys.identity_setup_rate(IDENTITY)))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any
    assert 0 < user_ttl <= 2_000
    assert 0 < identity_ttl <= 500


def test_a_mass_close_during_a_redis_stall_detaches_every_socket() -> None:
    """A burst of detaches while Redis stalls past the pool's timeout all reach Redis once it answers."""
    sockets, pool_size, pool_timeout = 200, 4, 0.5
    with RedisServer() as server:
        client = connect(server.url, 2.0, pool_size, pool_timeout)
        batcher = CommandBatcher(client, wait_timeout=7.0)  # as the workers build it: batcher_for
        store = SessionStore(client, ttl_seconds=60, max_per_user=5, batcher=batcher)
        presence = keys.socket_presence(IDENTITY)
        client.zadd(presence, {keys.socket_member("s1", f"k{n}"): 1 for n in range(sockets)})
        failures: list[Exception] = []
        started = threading.Semaphore(0)

        def close_socket(n: int) -> None:
            started.release()
            try:
                store.detach(IDENTITY, "s1", f"k{n}")
            except redis.RedisError as exc:
                failures.append(exc)

        with frozen(server.pid):  # a Redis busy elsewhere (a slow script, a fork) for a second
            threads = [threading.Thread(target=close_socket, args=(n,)) for n in range(sockets)]
            for thread in threads:
                thread.start()
            for _ in threads:
                started.acquire()
            time.sleep(2 * pool_timeout)  # the stall itself: it outlasts the pool's timeout
        for thread in threads:
            thread.join()
        assert (failures, client.zcard(presence)) == ([], 0)
