"""Store what push wake-ups need in Redis: the job queue, push registrations, hold-ups, rate counters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from vora.store import keys, scripts
from vora.store.codec import text

# Jobs waiting for a push worker; past this (approximately) the oldest are trimmed. A job is small
# (~200 bytes) and lives for one hold-up timeout, so this bounds memory when no worker runs.
JOBS_MAX_LENGTH = 100_000
# A queue nobody touched for this long is dropped with whatever it holds: its jobs are long stale.
JOBS_TTL_MS = 24 * 3600 * 1000

# The session-hash fields of a push registration.
PUSH_PLATFORM = "pushPlatform"
PUSH_DEVICE_TOKEN = "pushDeviceToken"  # noqa: S105 - a field name, not a secret
PUSH_APP_ID = "pushAppId"


@dataclass(frozen=True)
class PushRegistration:
    """How to reach a holdUpMode session's device: the platform, its device token, its app."""

    platform: str
    device_token: str
    app_id: str | None = None

    def __repr__(self) -> str:
        # The device token is credential-like: it must never reach a log line.
        return f"PushRegistration(platform={self.platform!r}, app_id={self.app_id!r})"


@dataclass(frozen=True)
class Job:
    """One entry of the push job queue."""

    job_id: str
    fields: dict[str, str]

    @property
    def kind(self) -> str:
        """Return what the job asks for: ring, attached or deadline."""
        return self.fields.get("kind", "")


@dataclass(frozen=True)
class HoldUpRef:
    """Name one held-up call: its identity, session and call id."""

    identity: str
    session_id: str
    call_id: str

    def member(self) -> str:
        """Encode the reference as a member of the deadline schedule."""
        return json.dumps([self.identity, self.session_id, self.call_id], separators=(",", ":"))

    @classmethod
    def from_member(cls, member: str) -> HoldUpRef:
        """Decode a member of the deadline schedule, raising TypeError on anything else."""
        decoded = json.loads(member)
        if not (isinstance(decoded, list) and len(decoded) == 3):
            raise TypeError(f"not a hold-up reference: {member!r}")
        return cls(*(str(part) for part in decoded))


def _optional_ms(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class HoldUp:
    """A held-up call as stored: the event that rang, its deadline, and how far its wake-up went.

    Stored as JSON in the session's hold-up hash under the call id; the scripts set the progress
    fields (attemptAt, pushedAt, takenBy, takenAt, outcome, reason, signalledAt) in place.
    """

    event_id: str
    ring_at: int
    deadline: int
    caller: str | None = None
    attempt_at: int | None = None  # a push attempt started (the device may connect before its 2xx)
    pushed_at: int | None = None  # the push gateway accepted the push
    taken_by: str | None = None  # the job that took the call for its outcome, exactly once
    taken_at: int | None = None
    outcome: str | None = None
    reason: str | None = None
    signalled_at: int | None = None  # the readiness signal went out

    def encode(self) -> str:
        """Encode a new hold-up record (its progress fields are the scripts' to set)."""
        record = {"eventId": self.event_id, "caller": self.caller, "ringAt": self.ring_at, "deadline": self.deadline}
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes) -> HoldUp:
        """Decode a stored hold-up, raising KeyError, TypeError or ValueError on a malformed one."""
        record = json.loads(raw)
        if not isinstance(record, dict):
            raise TypeError("a hold-up record is a JSON object")
        return cls(
            event_id=str(record["eventId"]),
            ring_at=int(record["ringAt"]),
            deadline=int(record["deadline"]),
            caller=record.get("caller") or None,
            attempt_at=_optional_ms(record.get("attemptAt")),
            pushed_at=_optional_ms(record.get("pushedAt")),
            taken_by=record.get("takenBy") or None,
            taken_at=_optional_ms(record.get("takenAt")),
            outcome=record.get("outcome"),
            reason=record.get("reason") or None,
            signalled_at=_optional_ms(record.get("signalledAt")),
        )


def registration_fields(registration: PushRegistration | None) -> dict[str, str]:
    """Encode a push registration as session-hash fields (none without one)."""
    if registration is None:
        return {}
    fields = {PUSH_PLATFORM: registration.platform, PUSH_DEVICE_TOKEN: registration.device_token}
    if registration.app_id:
        fields[PUSH_APP_ID] = registration.app_id
    return fields


def registration_from_hash(fields: dict[str, str]) -> PushRegistration | None:
    """Decode a push registration from a holdUpMode session's hash, or None when it has none."""
    if fields.get("holdUpMode") != "1" or not fields.get(PUSH_DEVICE_TOKEN):
        return None
    return PushRegistration(fields.get(PUSH_PLATFORM, ""), fields[PUSH_DEVICE_TOKEN], fields.get(PUSH_APP_ID) or None)


def _is_missing_group(exc: redis.ResponseError) -> bool:
    return "NOGROUP" in str(exc)


class PushStore:
    """Queue, claim and acknowledge push jobs; keep hold-ups and rate counters, each step atomic."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._create_holdup = client.register_script(scripts.CREATE_HOLDUP)
        self._update_holdup = client.register_script(scripts.UPDATE_HOLDUP)
        self._take_holdups = client.register_script(scripts.TAKE_HOLDUPS)
        self._queue_due = client.register_script(scripts.QUEUE_DUE_DEADLINES)
        self._count_push = client.register_script(scripts.COUNT_PUSH)
        self._enqueue = client.register_script(scripts.ENQUEUE_JOB)
        self._enqueue_once = client.register_script(scripts.ENQUEUE_JOB_ONCE)

    # The job queue: a Redis Stream read by one consumer group shared by every instance.

    def enqueue(self, kind: str, **fields: str | int) -> str:
        """Append a job to the queue; return its id."""
        flat: list[str | int] = ["kind", kind]
        for name, value in fields.items():
            flat += [name, str(value)]
        return text(self._enqueue(keys=[keys.PUSH_JOBS], args=[JOBS_MAX_LENGTH, JOBS_TTL_MS, *flat]))

    def enqueue_once(
        self, identity: str, event_id: str, remember_ms: int, kind: str, /, **fields: str | int
    ) -> str | None:
        """Append an event's job unless it was queued within remember_ms; return its id, or None when it was.

        The arguments before the job's fields are positional: a job names its identity and event too.
        """
        flat: list[str | int] = ["kind", kind]
        for name, value in fields.items():
            flat += [name, str(value)]
        queued = self._enqueue_once(
            keys=[keys.PUSH_JOBS, keys.push_job_queued(identity, event_id)],
            args=[JOBS_MAX_LENGTH, JOBS_TTL_MS, remember_ms, *flat],
        )
        return None if queued is None else text(queued)

    def ensure_group(self) -> None:
        """Create the consumer group (and the queue) unless they exist.

        A new group starts at the queue's oldest job: jobs queued before any worker ran are still
        done (the worker drops those older than a hold-up), and acknowledged jobs are deleted anyway.
        """
        try:
            self._redis.xgroup_create(keys.PUSH_JOBS, keys.PUSH_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int, block_ms: int) -> list[Job]:
        """Take up to count new jobs for this consumer, waiting up to block_ms for one."""
        try:
            reply = self._redis.xreadgroup(
                keys.PUSH_GROUP, consumer, {keys.PUSH_JOBS: ">"}, count=count, block=block_ms
            )
        except redis.ResponseError as exc:
            if not _is_missing_group(exc):
                raise
            self.ensure_group()  # the queue was deleted (FLUSHALL, a new Redis): start again
            return []
        jobs: list[Job] = []
        for _stream, entries in reply or []:  # type: ignore[union-attr] # redis-py types every reply as Awaitable | value
            jobs += [Job(text(job_id), {text(k): text(v) for k, v in fields.items()}) for job_id, fields in entries]
        return jobs

    def claim_abandoned(self, consumer: str, min_idle_ms: int, count: int) -> list[Job]:
        """Take over jobs another consumer took and left unacknowledged for min_idle_ms (it died)."""
        try:
            reply = self._redis.xautoclaim(keys.PUSH_JOBS, keys.PUSH_GROUP, consumer, min_idle_ms, "0-0", count=count)
        except redis.ResponseError as exc:
            if not _is_missing_group(exc):
                raise
            self.ensure_group()
            return []
        entries = reply[1]  # type: ignore[index] # redis-py types the XAUTOCLAIM reply as Awaitable | Any
        jobs: list[Job] = []
        for job_id, fields in entries:
            if fields is None:  # trimmed out of the queue meanwhile: nothing left to do
                self.ack(text(job_id))
                continue
            jobs.append(Job(text(job_id), {text(k): text(v) for k, v in fields.items()}))
        return jobs

    def touch(self, consumer: str, job_id: str) -> None:
        """Reset a job's idle time, so that nobody takes over a job that is still being worked on."""
        self._redis.xclaim(keys.PUSH_JOBS, keys.PUSH_GROUP, consumer, 0, [job_id], justid=True)

    def ack(self, job_id: str) -> None:
        """Mark a job done and drop it from the queue."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xack(keys.PUSH_JOBS, keys.PUSH_GROUP, job_id)
        pipe.xdel(keys.PUSH_JOBS, job_id)
        pipe.execute()

    def queue_stats(self, now_ms: int) -> tuple[int, float]:
        """Return how many jobs the queue holds and how old its oldest is, in seconds (0 when empty)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xlen(keys.PUSH_JOBS)
        pipe.xrange(keys.PUSH_JOBS, count=1)
        length, oldest = pipe.execute()
        if not oldest:
            return int(length), 0.0
        oldest_ms = int(text(oldest[0][0]).partition("-")[0])
        return int(length), max(0, now_ms - oldest_ms) / 1000

    def queue_due_deadlines(self, now_ms: int, limit: int) -> int:
        """Move hold-up deadlines that are due into the job queue; return how many moved."""
        return int(self._queue_due(keys=[keys.PUSH_DEADLINES, keys.PUSH_JOBS], args=[now_ms, limit, JOBS_MAX_LENGTH]))

    # Sessions that can be woken.

    def push_targets(self, identity: str) -> dict[str, PushRegistration]:
        """Return the push registration of each of an identity's holdUpMode sessions that has one."""
        session_ids = [text(s) for s in self._redis.zrange(keys.sessions_index(identity), 0, -1)]  # type: ignore[union-attr] # redis-py types every reply as Awaitable | value
        if not session_ids:
            return {}
        names = ["holdUpMode", PUSH_PLATFORM, PUSH_DEVICE_TOKEN, PUSH_APP_ID]
        pipe = self._redis.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.hmget(keys.session(identity, session_id), names)
        targets: dict[str, PushRegistration] = {}
        for session_id, values in zip(session_ids, pipe.execute(), strict=True):
            registration = registration_from_hash({n: text(v) for n, v in zip(names, values, strict=True) if v})
            if registration is not None:
                targets[session_id] = registration
        return targets

    # Hold-ups: a call waiting for a session's device to connect.

    def hold_up(self, ref: HoldUpRef, record: HoldUp, ttl_ms: int) -> HoldUp:
        """Record a held-up call once and schedule its deadline; return the stored record (maybe an older one)."""
        stored = self._create_holdup(
            keys=[keys.holdups(ref.identity, ref.session_id)], args=[ref.call_id, record.encode(), ttl_ms]
        )
        result = HoldUp.decode(text(stored))
        if result.taken_by is None:
            # Idempotent, so a re-delivered job repairs a schedule its crashed first try never wrote.
            self._redis.zadd(keys.PUSH_DEADLINES, {ref.member(): record.deadline}, nx=True)
        return result

    def mark(self, ref: HoldUpRef, field: str, value: int | str) -> bool:
        """Set a field of a held-up call that is still waiting; tell whether it was."""
        holdups = keys.holdups(ref.identity, ref.session_id)
        return bool(self._update_holdup(keys=[holdups], args=[ref.call_id, field, value, "0"]))

    def take(
        self,
        identity: str,
        session_id: str,
        job_id: str,
        outcome: str,
        now_ms: int,
        call_id: str = "",
        reason: str = "",
    ) -> list[tuple[HoldUpRef, HoldUp]]:
        """Take a session's held-up calls (or one call) for an outcome, each exactly once across instances."""
        flat = self._take_holdups(
            keys=[keys.holdups(identity, session_id)], args=[job_id, outcome, now_ms, call_id, reason]
        )
        return [
            (HoldUpRef(identity, session_id, text(flat[i])), HoldUp.decode(text(flat[i + 1])))
            for i in range(0, len(flat), 2)
        ]

    def settle(self, ref: HoldUpRef, now_ms: int) -> None:
        """Record that a held-up call's outcome was signalled and drop its deadline.

        The record stays until its key expires, so that a job delivered again (its acknowledgement
        lost) finds it settled instead of holding the call up, and pushing, a second time.
        """
        holdups = keys.holdups(ref.identity, ref.session_id)
        self._update_holdup(keys=[holdups], args=[ref.call_id, "signalledAt", now_ms, "1"])
        self._redis.zrem(keys.PUSH_DEADLINES, ref.member())

    def count_push(self, identity: str, limit: int, window_ms: int) -> bool:
        """Count a push to an identity; tell whether it stays within the limit of its window."""
        return bool(self._count_push(keys=[keys.push_rate(identity)], args=[limit, window_ms]))
