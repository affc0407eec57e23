"""The push worker: wake held-up sessions' devices and tell the telephony side when they are ready.

Every gunicorn worker runs one (started in post_worker_init, like the hub). Jobs come from the
Redis Stream `vora:{push}:jobs` through one consumer group shared by every instance, so each job
is processed by exactly one consumer; a job is acknowledged only when it is done, and one whose
consumer died is taken over after CLAIM_IDLE. The flow is described in docs/mobile-push.md.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis

from vora.core.clock import now_ms
from vora.core.log_fields import error_fields
from vora.core.settings import Settings
from vora.observability.metrics import HOLDUP_SIGNALS, WAKEUP_LATENCY, Metrics
from vora.push import rules as push
from vora.push.webhooks import WebhookSender
from vora.store.client import REDIS_TROUBLE
from vora.store.push import HoldUp, HoldUpRef, Job, PushRegistration, PushStore
from vora.store.sessions import SessionStore, StoredSession

log = logging.getLogger("vora.push")

MIN_CLAIM_IDLE_S = 30.0  # a job untouched this long (or longer, see claim_idle_ms) belongs to a dead consumer
CLAIM_EVERY_S = 5.0
DEADLINES_PER_TICK = 100
HOLDUP_TTL_MARGIN_MS = 10 * 60 * 1000  # a hold-up outlives its deadline so the deadline job still finds it


class MalformedJob(ValueError):
    """A job whose fields can never be processed."""


def job_ms(job: Job, name: str) -> int:
    """Read a millisecond field of a job, raising MalformedJob when it is missing or not a number."""
    raw = job.fields.get(name, "")
    if not raw.isdigit():
        raise MalformedJob(f"{job.kind} job without a numeric {name}")
    return int(raw)


class PushWorker:
    """Consume push jobs, send pushes, schedule hold-up deadlines and deliver readiness signals."""

    def __init__(self, settings: Settings, client: redis.Redis, sessions: SessionStore, metrics: Metrics) -> None:
        self._settings = settings
        self._store = PushStore(client)
        self._sessions = sessions
        self._metrics = metrics
        self._push_sender = WebhookSender(
            settings.push_timeout,
            settings.push_max_attempts,
            settings.push_backoff,
            on_retry=lambda: metrics.count("push_retried"),
        )
        self._callback_sender = WebhookSender(settings.push_timeout, settings.push_max_attempts, settings.push_backoff)
        self._timeout_ms = int(settings.holdup_timeout * 1000)
        self._block_ms = int(min(1.0, settings.redis_timeout / 2) * 1000)
        self._tick_s = min(1.0, max(0.1, settings.holdup_timeout / 10))
        self._lock = threading.Lock()
        self._started = False
        self._stopping = threading.Event()

    @property
    def enabled(self) -> bool:
        """Tell whether pushes are on (a push gateway is configured)."""
        return self._settings.push_enabled

    @property
    def claim_idle_ms(self) -> int:
        """Return how long a job may sit untouched before another consumer takes it over.

        The owner touches its job before every attempt, so the longest silent span is one attempt
        and one backoff; three times that leaves room for a busy worker.
        """
        return int(max(MIN_CLAIM_IDLE_S, 3 * self._push_sender.longest_pause_seconds()) * 1000)

    # Lifecycle.

    def ensure_started(self) -> None:
        """Start the consumers and the deadline scheduler once, when pushes are on."""
        if not self.enabled:
            return
        with self._lock:
            if self._started:
                return
            self._started = True
        for index in range(self._settings.push_concurrency):
            threading.Thread(
                target=self._consume_forever, args=(index,), name=f"vora-push-{index}", daemon=True
            ).start()
        threading.Thread(target=self._schedule_forever, name="vora-push-deadlines", daemon=True).start()

    def stop(self) -> None:
        """Take no new job; jobs in progress finish, unacknowledged ones are taken over by other workers."""
        self._stopping.set()

    # Hooks.

    def socket_attached(self, session: StoredSession) -> None:
        """Announce that a socket attached to a session, so a call held up for it is signalled ready; never blocks."""
        if not self.enabled or not session.hold_up_mode:
            return
        attached_at = now_ms()
        threading.Thread(
            target=self._announce_attached,
            args=(session.identity, session.session_id, attached_at),
            name="vora-push-attached",
            daemon=True,
        ).start()

    def _announce_attached(self, identity: str, session_id: str, attached_at: int) -> None:
        # Retried while the hold-up can still be waiting: losing this job would turn a ready device into notReady.
        delay = 0.05
        give_up_at = time.monotonic() + self._settings.holdup_timeout
        while True:
            try:
                self._store.enqueue("attached", identity=identity, sessionId=session_id, at=attached_at)
                return
            except REDIS_TROUBLE as exc:
                self._metrics.count("redis_error:push")
                if time.monotonic() + delay > give_up_at:
                    log.warning("socket attachment not announced", extra={"fields": error_fields(exc)})
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # Loops.

    def _consume_forever(self, index: int) -> None:
        consumer = f"{socket.gethostname()}:{os.getpid()}:{index}"
        next_claim = 0.0
        backoff = 0.05
        while not self._stopping.is_set():
            try:
                jobs: list[Job] = []
                if index == 0 and time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + CLAIM_EVERY_S
                    jobs = self._store.claim_abandoned(consumer, self.claim_idle_ms, 10)
                if not jobs:
                    jobs = self._store.read(consumer, 1, self._block_ms)
                for job in jobs:
                    self.process(job, consumer)
                    self._store.ack(job.job_id)
                backoff = 0.05
            except Exception as exc:  # noqa: BLE001 - a consumer must outlive any failure; its job stays pending
                self._metrics.count("redis_error:push")
                log.warning(
                    "push job failed; it stays queued",
                    extra={"fields": error_fields(exc)},
                    exc_info=not isinstance(exc, REDIS_TROUBLE),
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _schedule_forever(self) -> None:
        while not self._stopping.wait(self._tick_s):
            try:
                self._store.queue_due_deadlines(now_ms(), DEADLINES_PER_TICK)
            except REDIS_TROUBLE as exc:
                self._metrics.count("redis_error:push")
                log.info("deadline check failed", extra={"fields": error_fields(exc)})

    # Jobs.

    def process(self, job: Job, consumer: str) -> None:
        """Do what one job asks; raise (leaving it queued) only when Redis fails."""

        def touch() -> None:
            self._store.touch(consumer, job.job_id)

        try:
            if job.kind == "ring":
                self._ring(job, touch)
            elif job.kind == "attached":
                fields = job.fields
                for ref, holdup in self._store.take(
                    fields["identity"], fields["sessionId"], job.job_id, push.HOLDUP_READY, job_ms(job, "at")
                ):
                    self._signal(ref, holdup, touch)
            elif job.kind == "deadline":
                ref = HoldUpRef.from_member(job.fields["holdup"])
                for taken, holdup in self._store.take(
                    ref.identity,
                    ref.session_id,
                    job.job_id,
                    push.HOLDUP_NOT_READY,
                    now_ms(),
                    ref.call_id,
                    push.NOT_READY_TIMEOUT,
                ):
                    self._signal(taken, holdup, touch)
            else:
                log.warning("unknown push job dropped", extra={"fields": {"kind": job.kind}})
        except (KeyError, TypeError, ValueError, MalformedJob) as exc:
            # A malformed job can never succeed: drop it rather than retry it forever.
            log.warning("malformed push job dropped", extra={"fields": {"kind": job.kind, "error": repr(exc)}})

    def _ring(self, job: Job, touch: Callable[[], None]) -> None:
        fields = job.fields
        identity, call_id, ring_at = fields["identity"], fields["callId"], job_ms(job, "ringAt")
        deadline = ring_at + self._timeout_ms
        if now_ms() >= deadline:
            self._metrics.count("push_stale")  # queued longer than a hold-up lasts: the call is over
            return
        targets = self._store.push_targets(identity)
        if not targets:
            return
        open_sockets = self._sessions.open_sockets(identity, now_ms())
        for session_id, registration in targets.items():
            if open_sockets.get(session_id):
                continue  # awake: the call reaches it on its socket
            ref = HoldUpRef(identity, session_id, call_id)
            record = HoldUp(fields["eventId"], ring_at, deadline, fields.get("caller") or None)
            holdup = self._store.hold_up(ref, record, self._timeout_ms + HOLDUP_TTL_MARGIN_MS)
            self._wake(job, ref, registration, holdup, touch)

    def _wake(
        self,
        job: Job,
        ref: HoldUpRef,
        registration: PushRegistration,
        holdup: HoldUp,
        touch: Callable[[], None],
    ) -> None:
        if holdup.taken_by:
            if holdup.taken_by == job.job_id:  # this job's earlier try stopped before signalling
                self._signal(ref, holdup, touch)
            return
        if holdup.pushed_at is not None:
            return  # this job's earlier try pushed already
        if self._sessions.open_sockets(ref.identity, now_ms()).get(ref.session_id):
            # A socket opened between the presence read and the hold-up: the device is awake, no push.
            self._finish(job, ref, push.HOLDUP_READY, "", touch)
            return
        if not self._store.count_push(
            ref.identity, self._settings.push_rate_limit, self._settings.push_rate_window * 1000
        ):
            self._metrics.count("push_rate_limited")
            self._finish(job, ref, push.HOLDUP_NOT_READY, push.NOT_READY_RATE_LIMITED, touch)
            return

        def still_waiting() -> bool:
            touch()
            # The device may connect before the gateway's 2xx is recorded: the wake-up then counts from here.
            return self._store.mark(ref, "attemptAt", now_ms())

        delivery = self._push_sender.deliver(
            self._settings.push_gateway_url,
            self._settings.push_secret,
            push.PUSH_NOTIFICATION,
            push.delivery_id(ref, push.PUSH_NOTIFICATION),
            push.push_body(ref, registration, holdup),
            before_attempt=still_waiting,
        )
        if delivery.delivered:
            self._metrics.count("push_sent")
            self._store.mark(ref, "pushedAt", now_ms())
        elif delivery.problem != "abandoned":
            self._metrics.count("push_failed")
            log.warning(
                "push not delivered",
                extra={
                    "fields": {"session": ref.session_id, "attempts": delivery.attempts, "problem": delivery.problem}
                },
            )
            self._finish(job, ref, push.HOLDUP_NOT_READY, push.NOT_READY_PUSH_FAILED, touch)

    def _finish(self, job: Job, ref: HoldUpRef, outcome: str, reason: str, touch: Callable[[], None]) -> None:
        for taken, holdup in self._store.take(
            ref.identity, ref.session_id, job.job_id, outcome, now_ms(), ref.call_id, reason
        ):
            self._signal(taken, holdup, touch)

    def _signal(self, ref: HoldUpRef, holdup: HoldUp, touch: Callable[[], None]) -> None:
        if holdup.signalled_at is not None:
            return  # a re-delivered job whose first try signalled already
        body = push.readiness_body(ref, holdup)
        HOLDUP_SIGNALS.labels(body["type"], body.get("reason", "")).inc()
        if body.get("wakeUpMs") is not None:
            WAKEUP_LATENCY.observe(body["wakeUpMs"] / 1000)
        log.info(
            "hold-up ended",
            extra={"fields": {"session": ref.session_id, "outcome": body["type"], "reason": body.get("reason")}},
        )
        if self._settings.holdup_callback_url:

            def keep_job() -> bool:
                touch()
                return True

            delivery = self._callback_sender.deliver(
                self._settings.holdup_callback_url,
                self._settings.holdup_callback_secret,
                body["type"],
                body["signalId"],
                body,
                before_attempt=keep_job,
            )
            if not delivery.delivered:
                self._metrics.count("holdup_callback_failed")
                log.warning(
                    "readiness callback not delivered",
                    extra={"fields": {"session": ref.session_id, "problem": delivery.problem}},
                )
        self._store.settle(ref, now_ms())
