"""Tests of the push worker's job handling in-process, on real Redis and a real gateway receiver."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from testbed.webhooks import WebhookReceiver
from tests.harness import wait_for
from vora.core.settings import Settings
from vora.observability.metrics import Metrics
from vora.push.worker import PushWorker
from vora.store import keys
from vora.store.directory import Directory
from vora.store.push import Job, PushRegistration, PushStore
from vora.store.sessions import NewSession, SessionStore, StoredSession

SECRET = "w" * 32
IDENTITY = "910111000"
SESSION = "s" * 32


@pytest.fixture
def gateway() -> Iterator[WebhookReceiver]:
    """Run a push gateway receiver."""
    with WebhookReceiver(SECRET) as receiver:
        yield receiver


@pytest.fixture
def worker(settings: Settings, redisdb: redis.Redis, gateway: WebhookReceiver) -> PushWorker:
    """Build a push worker (its loops not started) with a sleeping holdUpMode session to wake."""
    pushing = settings.with_changes(push_gateway_url=gateway.url, push_secret=SECRET, push_backoff=0.01)
    sessions = SessionStore.from_settings(redisdb, pushing)
    Directory(redisdb).add("alice", [IDENTITY])
    sessions.create(
        IDENTITY,
        SESSION,
        "h" * 64,
        NewSession("alice", "WebSocket", True, frozenset(), "*", PushRegistration("fcm", "tok")),
    )
    return PushWorker(pushing, redisdb, sessions, Metrics())


def ring_job(job_id: str = "1-1", ring_at: int | None = None) -> Job:
    """Build a ring job as the publisher queues it."""
    ring_ms = int(time.time() * 1000) if ring_at is None else ring_at
    fields = {"kind": "ring", "identity": IDENTITY, "callId": "c-1", "caller": "+34", "eventId": f"{ring_ms}-1"}
    return Job(job_id, {**fields, "ringAt": str(ring_ms)})


def test_a_redelivered_ring_job_pushes_once(worker: PushWorker, gateway: WebhookReceiver, redisdb: redis.Redis) -> None:
    """Processing the same job twice (a take-over after a crash) sends one push and keeps one hold-up."""
    PushStore(redisdb).ensure_group()
    job = ring_job()
    worker.process(job, "c")
    worker.process(job, "c")
    assert [a.body["sessionId"] for a in gateway.attempts] == [SESSION]
    assert redisdb.hlen(keys.holdups(IDENTITY, SESSION)) == 1
    assert redisdb.zcard(keys.PUSH_DEADLINES) == 1


def test_a_ring_job_delivered_again_after_its_call_settled_does_nothing(
    worker: PushWorker, gateway: WebhookReceiver, redisdb: redis.Redis
) -> None:
    """A ring job delivered again (its ack lost) after the device connected neither pushes nor holds the call up."""
    PushStore(redisdb).ensure_group()
    job = ring_job()
    worker.process(job, "c")
    attached = {"kind": "attached", "identity": IDENTITY, "sessionId": SESSION, "at": str(int(time.time() * 1000))}
    worker.process(Job("2-1", attached), "c")
    assert redisdb.zcard(keys.PUSH_DEADLINES) == 0
    worker.process(job, "c")
    assert len(gateway.attempts) == 1
    assert redisdb.zcard(keys.PUSH_DEADLINES) == 0


def test_a_ring_job_older_than_a_hold_up_is_dropped(worker: PushWorker, gateway: WebhookReceiver) -> None:
    """A call that waited in the queue past the hold-up timeout is not pushed."""
    worker.process(ring_job(ring_at=int(time.time() * 1000) - 3_600_000), "c")
    assert gateway.attempts == []


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "ring", "identity": IDENTITY},
        {"kind": "ring", "identity": IDENTITY, "callId": "c", "eventId": "1-1", "ringAt": "soon"},
        {"kind": "attached", "identity": IDENTITY, "sessionId": SESSION, "at": ""},
        {"kind": "deadline", "holdup": "not json"},
        {"kind": "deadline", "holdup": "[1, 2]"},
        {"kind": "teleport"},
    ],
)
def test_malformed_jobs_are_dropped_not_retried(
    worker: PushWorker, gateway: WebhookReceiver, fields: dict[str, str]
) -> None:
    """A job that can never succeed is dropped without raising, so it is acknowledged instead of retried forever."""
    worker.process(Job("1-1", fields), "c")
    assert gateway.attempts == []


def test_only_holdup_sockets_queue_an_attachment(worker: PushWorker, redisdb: redis.Redis) -> None:
    """A socket on a plain session queues nothing; one on a holdUpMode session queues one attached job."""
    plain = StoredSession(IDENTITY, "p" * 32, "alice", "WebSocket", False, frozenset(), "*", 0)
    held = StoredSession(IDENTITY, SESSION, "alice", "WebSocket", True, frozenset(), "*", 0)
    worker.socket_attached(plain)
    worker.socket_attached(held)
    wait_for(lambda: redisdb.xlen(keys.PUSH_JOBS) >= 1, 10, what="the attached job")  # type: ignore[operator] # redis-py types sync replies as Awaitable | Any
    [(_, fields)] = redisdb.xrange(keys.PUSH_JOBS)  # type: ignore[misc] # redis-py types sync replies as Awaitable | Any
    assert (fields[b"kind"], fields[b"sessionId"]) == (b"attached", SESSION.encode())


def test_without_a_gateway_nothing_starts(settings: Settings, redisdb: redis.Redis) -> None:
    """With no gateway configured the worker is off and a holdUpMode socket queues nothing."""
    sessions = SessionStore.from_settings(redisdb, settings)
    worker = PushWorker(settings, redisdb, sessions, Metrics())
    worker.ensure_started()
    worker.socket_attached(StoredSession(IDENTITY, SESSION, "alice", "WebSocket", True, frozenset(), "*", 0))
    assert not worker.enabled
    assert [t.name for t in threading.enumerate() if t.name.startswith("vora-push")] == []
    assert redisdb.xlen(keys.PUSH_JOBS) == 0
