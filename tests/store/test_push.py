"""Tests of the push store against a real Redis: the job queue, hold-ups taken once, deadlines, rate counters."""

from __future__ import annotations

import pytest
import redis

from vora.store import keys
from vora.store.push import JOBS_TTL_MS, HoldUp, HoldUpRef, PushStore

IDENTITY = "910111000"
REF = HoldUpRef(IDENTITY, "s1", "call-1")


@pytest.fixture
def store(redisdb: redis.Redis) -> PushStore:
    """Return a push store on the test Redis."""
    return PushStore(redisdb)


def hold(store: PushStore, ref: HoldUpRef = REF, deadline_ms: int = 2_000) -> HoldUp:
    """Record a held-up call due at deadline_ms."""
    return store.hold_up(ref, HoldUp("1-1", 1_000, deadline_ms), 60_000)


class TestQueue:
    """One consumer group shared by every instance."""

    def test_each_job_goes_to_one_consumer_and_leaves_when_acknowledged(self, store: PushStore) -> None:
        """Two consumers reading the same queue get a job once between them; ack removes it."""
        store.ensure_group()
        job_id = store.enqueue("ring", identity=IDENTITY, callId="c")
        first = store.read("a", 10, 10)
        second = store.read("b", 10, 10)
        assert [j.job_id for j in first + second] == [job_id]
        assert first[0].kind == "ring"
        store.ack(job_id)
        assert store.claim_abandoned("b", 0, 10) == []

    def test_jobs_queued_before_any_consumer_are_still_read(self, store: PushStore, redisdb: redis.Redis) -> None:
        """A job queued before the group exists (or after a flush) is read once the group is made."""
        job_id = store.enqueue("ring", identity=IDENTITY)
        assert store.read("a", 10, 10) == []  # no group yet: created now, from the oldest job
        assert [j.job_id for j in store.read("a", 10, 10)] == [job_id]

    def test_a_queue_nobody_uses_expires(self, store: PushStore, redisdb: redis.Redis) -> None:
        """Every job renews the queue's expiry, so a queue without consumers does not stay forever."""
        store.enqueue("ring", identity=IDENTITY)
        assert 0 < redisdb.pttl(keys.PUSH_JOBS) <= JOBS_TTL_MS  # type: ignore[operator] # redis-py types sync replies as Awaitable | Any

    def test_an_unacknowledged_job_is_taken_over_after_its_idle_time(self, store: PushStore) -> None:
        """A job whose consumer never acknowledged it is claimed by another; touching it keeps it."""
        store.ensure_group()
        job_id = store.enqueue("deadline", holdup="x")
        store.read("dead", 10, 10)
        assert store.claim_abandoned("alive", 60_000, 10) == []
        store.touch("dead", job_id)
        assert [j.job_id for j in store.claim_abandoned("alive", 0, 10)] == [job_id]

    def test_due_deadlines_move_to_the_queue_once(self, store: PushStore) -> None:
        """A due deadline becomes one deadline job; a later one waits; a second sweep moves nothing."""
        store.ensure_group()
        hold(store, REF, 2_000)
        hold(store, HoldUpRef(IDENTITY, "s2", "call-1"), 9_000)
        assert store.queue_due_deadlines(5_000, 10) == 1
        assert store.queue_due_deadlines(5_000, 10) == 0
        [job] = store.read("a", 10, 10)
        assert (job.kind, HoldUpRef.from_member(job.fields["holdup"])) == ("deadline", REF)


class TestHoldUps:
    """A held-up call ends exactly once."""

    def test_a_second_record_keeps_the_first(self, store: PushStore) -> None:
        """Recording the same call again returns the stored record, unchanged."""
        hold(store)
        store.mark(REF, "pushedAt", 1_500)
        again = store.hold_up(REF, HoldUp("9-9", 5, 6), 60_000)
        assert (again.event_id, again.pushed_at) == ("1-1", 1_500)

    def test_only_the_first_outcome_takes_the_call(self, store: PushStore) -> None:
        """The first take wins the race, a later one gets nothing, and a re-delivery of the winner repeats it."""
        hold(store)
        [(ref, won)] = store.take(IDENTITY, "s1", "job-ready", "holdUpReady", 1_800)
        assert (ref, won.outcome, won.taken_at) == (REF, "holdUpReady", 1_800)
        assert store.take(IDENTITY, "s1", "job-deadline", "holdUpNotReady", 2_000, "call-1", "timeout") == []
        assert store.take(IDENTITY, "s1", "job-ready", "holdUpReady", 1_900)[0][1].taken_at == 1_800
        assert not store.mark(REF, "pushedAt", 1)

    def test_a_settled_call_is_not_held_up_again(self, store: PushStore, redisdb: redis.Redis) -> None:
        """Once signalled, a call's deadline is gone and recording it again returns the settled record."""
        hold(store)
        store.take(IDENTITY, "s1", "job", "holdUpReady", 1_800)
        store.settle(REF, 1_900)
        assert redisdb.zcard(keys.PUSH_DEADLINES) == 0
        again = hold(store)
        assert (again.taken_by, again.signalled_at) == ("job", 1_900)
        assert 0 < redisdb.pttl(keys.holdups(IDENTITY, "s1")) <= 60_000  # type: ignore[operator] # redis-py types sync replies as Awaitable | Any

    def test_rate_limit_counts_per_identity_window(self, store: PushStore, redisdb: redis.Redis) -> None:
        """The limit admits that many pushes in a window, then refuses; the counter expires with its window."""
        assert [store.count_push(IDENTITY, 2, 60_000) for _ in range(3)] == [True, True, False]
        assert store.count_push("602128708", 2, 60_000)
        assert 0 < redisdb.pttl(keys.push_rate(IDENTITY)) <= 60_000  # type: ignore[operator] # redis-py types sync replies as Awaitable | Any

    def test_push_targets_are_holdup_sessions_with_a_device(self, store: PushStore, redisdb: redis.Redis) -> None:
        """Only sessions with holdUpMode and a device token are targets."""
        for sid, fields in {
            "woken": {"holdUpMode": "1", "pushPlatform": "fcm", "pushDeviceToken": "t"},
            "no-device": {"holdUpMode": "1"},
            "plain": {"holdUpMode": "0", "pushPlatform": "fcm", "pushDeviceToken": "t"},
        }.items():
            redisdb.hset(keys.session(IDENTITY, sid), mapping=fields)
            redisdb.zadd(keys.sessions_index(IDENTITY), {sid: 1})
        targets = store.push_targets(IDENTITY)
        assert list(targets) == ["woken"]
        assert (targets["woken"].platform, targets["woken"].device_token) == ("fcm", "t")
