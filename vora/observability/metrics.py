"""Prometheus metrics, shared by every gunicorn worker through prometheus-client's multiprocess mode.

The master process sets PROMETHEUS_MULTIPROC_DIR before it forks workers (vora.gunicorn_conf),
so every worker writes its samples to files there and the master serves their sum on the
operators' port. Without that variable (tests, the CLI) the metrics live in this process.
"""

from __future__ import annotations

import bisect
import gc
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from vora.core.catalog import SUBSCRIBABLE_EVENTS

log = logging.getLogger("vora.observability")

# Every label value each family can take, created at import so that every series exists at zero
# from start-up: an alert on rate() or increase() cannot tell "never happened" from "absent".
TRANSPORTS = ("websocket", "sse")
REDIS_ERROR_PLACES = ("rest", "bus", "lease", "push")
CLOSE_CODES = ("1000", "1001", "1011", "4008", "aborted", "ended")  # "ended": not closed by the connection
TERMINATION_REASONS = ("logout", "replaced", "tokenExpired", "revoked", "maintenance", "disconnected")
REFUSAL_REASONS = (
    "bad_request",  # not a sound WebSocket handshake, an unknown query parameter, a bad lastEventId
    "version",  # another WebSocket version than 13
    "origin",  # a page from an origin VORA_CORS_ORIGINS does not list
    "unauthorized",  # no token, an unknown one, or its session ended
    "session_full",  # the session has VORA_WS_MAX_SOCKETS_PER_SESSION sockets open
    "draining",  # this instance is shutting down
    "overloaded",  # VORA_WS_MAX_PENDING_HANDSHAKES in progress on the worker
    "bus_unavailable",  # the worker's Redis event subscription is down
    "redis_unavailable",  # Redis failed or refused the admission (503, its message says how)
)
HOLDUP_OUTCOMES = {
    "holdUpReady": ("",),
    "holdUpNotReady": ("timeout", "pushFailed", "rateLimited"),
}
OTHER = "other"  # a value outside the known set (a newer code or reason): the label set stays bounded

HTTP_REQUESTS = Counter(
    "vora_http_requests_total",
    "HTTP requests served, by spec operationId and status.",
    ["operation", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "vora_http_request_duration_seconds",
    "Time to serve an HTTP request, by spec operationId.",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
OPEN_SOCKETS = Gauge("vora_ws_open_sockets", "WebSockets open now.", multiprocess_mode="livesum")
EVENTS_RECEIVED = Counter("vora_events_received_total", "Events a worker took from the Redis event bus.")
EVENTS_DELIVERED = Counter("vora_events_delivered_total", "Events written to sockets, lifecycle events included.")
EVENTS_DROPPED = Counter("vora_events_dropped_total", "Events discarded when a slow consumer's queue overflowed.")
SLOW_CONSUMERS = Counter("vora_ws_slow_consumers_total", "Sockets closed because their queue overflowed (4008).")
CLIENT_FLOODS = Counter(
    "vora_ws_client_floods_total", "Sockets closed because the client sent more frames or bytes than it may (4029)."
)
HANDSHAKES_SHED = Counter(
    "vora_ws_handshakes_shed_total",
    "WebSocket handshakes refused 503 at once: the worker had VORA_WS_MAX_PENDING_HANDSHAKES in progress.",
)
RESUMES = Counter("vora_ws_resumes_total", "Sockets opened with lastEventId.")
RESUME_GAPS = Counter("vora_ws_resume_gaps_total", "Resumes whose position was older than the retained events.")
EVENTS_PUBLISHED = Counter("vora_events_published_total", "Events published by this process, by type.", ["type"])
for _type in SUBSCRIBABLE_EVENTS:  # the types a publisher may send
    EVENTS_PUBLISHED.labels(_type)
REDIS_FAILURES = Counter("vora_redis_errors_total", "Redis commands that failed, by where they failed.", ["where"])
for _where in REDIS_ERROR_PLACES:
    REDIS_FAILURES.labels(_where)
REDIS_RECONNECTS = Counter("vora_redis_reconnects_total", "Times a worker's event subscription was re-established.")
PUSHES_SENT = Counter("vora_push_sent_total", "Pushes the push gateway accepted (2xx).")
PUSHES_FAILED = Counter(
    "vora_push_failed_total", "Pushes given up: every attempt failed, or the gateway refused (4xx)."
)
PUSHES_RETRIED = Counter(
    "vora_push_retries_total", "Push attempts repeated after a timeout, a refused connection or a 5xx."
)
PUSHES_RATE_LIMITED = Counter("vora_push_rate_limited_total", "Pushes not sent: the identity's rate limit was reached.")
PUSH_JOBS_STALE = Counter("vora_push_jobs_stale_total", "Ringing calls that waited in the push queue past the hold-up.")
HOLDUP_CALLBACKS_FAILED = Counter(
    "vora_holdup_callbacks_failed_total", "Readiness signals the telephony side's callback never accepted."
)
HOLDUP_SIGNALS = Counter(
    "vora_holdup_signals_total",
    "Held-up calls ended, by signal (holdUpReady/holdUpNotReady) and reason.",
    ["outcome", "reason"],
)
for _outcome, _reasons in HOLDUP_OUTCOMES.items():
    for _reason in _reasons:
        HOLDUP_SIGNALS.labels(_outcome, _reason)
WAKEUP_LATENCY = Histogram(
    "vora_push_wakeup_seconds",
    "Time from a push accepted by the gateway to its device's socket attaching.",
    buckets=(0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0),
)

# Seconds from an event's publication (its eventId's milliseconds: Redis' clock when it was stored)
# to its frame's write to a socket; live deliveries only, a catch-up's are in CATCH_UP_EVENTS.
DELIVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_LATENCY = Histogram(
    "vora_event_delivery_seconds",
    "Time from an event's publication to its write to a client's socket, live deliveries, by transport.",
    ["transport"],
    buckets=DELIVERY_BUCKETS,
)
OPEN_CONNECTIONS_METRIC = "vora_open_connections"  # read back by vora.observability.instance
OPEN_CONNECTIONS = Gauge(
    OPEN_CONNECTIONS_METRIC,
    "Event connections open now, by transport, per worker process (pid).",
    ["transport"],
    multiprocess_mode="liveall",
)
CONNECTION_LIMIT = Gauge(
    "vora_worker_connections_limit",
    "Connections a worker may hold at once (gunicorn's worker_connections), per worker process (pid).",
    multiprocess_mode="liveall",
)
CLOSES = Counter(
    "vora_connection_closes_total",
    "Event connections ended, by transport and the close code VORA sent ('aborted': cut without one; "
    "'ended': the peer closed it, or the transport did on a ping timeout or an oversized message).",
    ["transport", "code"],
)
TERMINATIONS = Counter(
    "vora_channel_terminated_total", "channelTerminated events sent, by reason.", ["transport", "reason"]
)
CATCH_UP_EVENTS = Histogram(
    "vora_catch_up_events",
    "Stored events a connection wrote while catching up (on opening, on resuming, after a bus gap), by transport.",
    ["transport"],
    buckets=(0, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000),
)
HANDSHAKE_REFUSALS = Counter(
    "vora_handshake_refusals_total",
    "Connection handshakes refused before the upgrade, by transport and reason.",
    ["transport", "reason"],
)
WORKER_CPU = Gauge(
    "vora_worker_cpu_seconds", "CPU time a worker process has used (use rate()), per pid.", multiprocess_mode="liveall"
)
WORKER_MEMORY = Gauge(
    "vora_worker_resident_memory_bytes", "A worker process's resident memory, per pid.", multiprocess_mode="liveall"
)
WORKER_OPEN_FDS = Gauge(
    "vora_worker_open_fds", "File descriptors a worker process has open, per pid.", multiprocess_mode="liveall"
)
WORKER_MAX_FDS = Gauge(
    "vora_worker_max_fds", "A worker process's open-files limit (RLIMIT_NOFILE), per pid.", multiprocess_mode="liveall"
)
# A worker runs all its connections' work in turns on one event loop: a turn that does not yield (a long
# computation, a garbage collection, a stopped or starved process) delays every one of them. A timer
# due every LOOP_PROBE_SECONDS tells how late the loop ran it; a turn shorter than the interval is
# seen only when it covers the timer's due time, so the histogram samples the loop, the log line does not miss a stall.
LOOP_PROBE_SECONDS = 0.05
LOOP_STALL_WARNING_SECONDS = 1.0  # a lateness logged as a warning: rings and answers waited that long
LOOP_LAG = Histogram(
    "vora_worker_loop_lag_seconds",
    "How late a worker's event loop ran a timer due every 50 ms: how long a turn that did not yield held "
    "every connection of that worker.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
GC_GENERATIONS = ("0", "1", "2")
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
GC_PAUSES = Histogram(
    "vora_worker_gc_pause_seconds",
    "Python garbage collections in the workers, by generation: each pauses every connection of its worker.",
    ["generation"],
    buckets=GC_PAUSE_BUCKETS,
)
for _generation in GC_GENERATIONS:
    GC_PAUSES.labels(_generation)
for _transport in TRANSPORTS:
    DELIVERY_LATENCY.labels(_transport)
    CATCH_UP_EVENTS.labels(_transport)
    for _code in (*CLOSE_CODES, OTHER):
        CLOSES.labels(_transport, _code)
    for _reason in (*TERMINATION_REASONS, OTHER):
        TERMINATIONS.labels(_transport, _reason)
    for _reason in (*REFUSAL_REASONS, OTHER):
        HANDSHAKE_REFUSALS.labels(_transport, _reason)

_COUNTERS: dict[str, Counter] = {
    "received": EVENTS_RECEIVED,
    "delivered": EVENTS_DELIVERED,
    "dropped": EVENTS_DROPPED,
    "slow_consumer": SLOW_CONSUMERS,
    "client_flood": CLIENT_FLOODS,
    "handshake_shed": HANDSHAKES_SHED,
    "resumed": RESUMES,
    "resume_gap": RESUME_GAPS,
    "reconnect": REDIS_RECONNECTS,
    "push_sent": PUSHES_SENT,
    "push_failed": PUSHES_FAILED,
    "push_retried": PUSHES_RETRIED,
    "push_rate_limited": PUSHES_RATE_LIMITED,
    "push_stale": PUSH_JOBS_STALE,
    "holdup_callback_failed": HOLDUP_CALLBACKS_FAILED,
}


def _add_counted(child: Any, counts: list[int]) -> None:
    """Add per-bucket counts to a histogram child and take them off the counts (its sum is the caller's)."""
    # Histogram.observe adds one observation; a bucket's value object adds many at once.
    for index, count in enumerate(counts):
        if count:
            counts[index] -= count
            child._buckets[index].inc(count)


class DeliveryTally:
    """Live deliveries' latencies counted into plain integers per bucket, added to the histogram at flush.

    One event written to a thousand sockets is one call here, not a thousand locked mmap writes.
    """

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def add(self, transport: str, seconds: float, writes: int) -> None:
        """Count writes deliveries of one event, each seconds after its publication."""
        counts = self._counts.get(transport)
        if counts is None:
            counts = self._counts[transport] = [0] * (len(DELIVERY_BUCKETS) + 1)
            self._sums[transport] = 0.0
        counts[bisect.bisect_left(DELIVERY_BUCKETS, seconds)] += writes
        self._sums[transport] += seconds * writes

    def flush(self) -> None:
        """Add what was counted since the last flush to vora_event_delivery_seconds."""
        for transport, counts in self._counts.items():
            if not any(counts):
                continue
            child = DELIVERY_LATENCY.labels(transport)
            _add_counted(child, counts)
            child._sum.inc(self._sums[transport])
            self._sums[transport] = 0.0


# Counted on every event: kept in plain integers between flushes.
BUFFERED_COUNTERS = ("delivered", "received")


def _known(value: str, known: tuple[str, ...]) -> str:
    return value if value in known else OTHER


class Metrics:
    """Count what happens on this worker, by short name, into Prometheus and a local tally.

    Names are plain ("resumed") or carry a label after a colon: "redis_error:<where>", "open:<transport>",
    "close:<transport>:<code>", "terminated:<transport>:<reason>", "catch_up:<transport>" (the
    amount is the number of events). Live deliveries' latencies come through latency(), typed.

    Deliveries are counted on every socket wake and bus notices on every event, the hot path:
    into plain integers that flush() adds to Prometheus (the worker's reactor calls it every
    second and when a socket ends), not with a lock and a multiprocess mmap write each time
    (the received counter alone was 6 % of a worker's time at 1,000 events/s). The integers are
    exact under gevent, where nothing switches inside an addition. Deliveries' latencies likewise.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {}
        self._unflushed = dict.fromkeys(BUFFERED_COUNTERS, 0)
        self._latencies = DeliveryTally()

    def count(self, name: str, amount: int = 1) -> None:
        """Add amount (negative for the socket gauges) to a named value."""
        unflushed = self._unflushed
        if name in unflushed:
            unflushed[name] += amount
            return
        kind, _, label = name.partition(":")
        with self._lock:
            self.values[name] = self.values.get(name, 0) + amount
        if kind == "open":
            if label == "websocket":
                OPEN_SOCKETS.inc(amount)
            OPEN_CONNECTIONS.labels(label).inc(amount)
        elif kind == "redis_error":
            REDIS_FAILURES.labels(_known(label or "bus", REDIS_ERROR_PLACES)).inc(amount)
        elif kind == "close":
            transport, _, code = label.partition(":")
            CLOSES.labels(transport, _known(code, CLOSE_CODES)).inc(amount)
        elif kind == "terminated":
            transport, _, reason = label.partition(":")
            TERMINATIONS.labels(transport, _known(reason, TERMINATION_REASONS)).inc(amount)
        elif kind == "catch_up":
            CATCH_UP_EVENTS.labels(label).observe(amount)
        else:
            _COUNTERS[name].inc(amount)

    def latency(self, transport: str, latency_ms: int, writes: int) -> None:
        """Count writes live deliveries of one event, latency_ms after its publication, for the next flush."""
        # Redis' clock ahead of this worker's gives a negative latency: counted as 0.
        self._latencies.add(transport, max(0, latency_ms) / 1000, writes)

    def flush(self) -> None:
        """Add the deliveries and notices counted since the last flush to Prometheus; never blocks."""
        self._latencies.flush()
        unflushed = self._unflushed
        for name in BUFFERED_COUNTERS:
            amount = unflushed[name]
            if not amount:
                continue
            unflushed[name] -= amount
            with self._lock:
                self.values[name] = self.values.get(name, 0) + amount
            _COUNTERS[name].inc(amount)

    def get(self, name: str) -> int:
        """Return a named value of this app, zero when nothing was counted."""
        return self.values.get(name, 0) + self._unflushed.get(name, 0)


def count_refusal(transport: str, reason: str) -> None:
    """Count a handshake refused before the upgrade."""
    HANDSHAKE_REFUSALS.labels(transport, _known(reason, REFUSAL_REASONS)).inc()


_process = ProcessCollector(registry=None)  # reads /proc/self: the process that calls it
_PROCESS_GAUGES = {
    "process_cpu_seconds_total": WORKER_CPU,
    "process_resident_memory_bytes": WORKER_MEMORY,
    "process_open_fds": WORKER_OPEN_FDS,
    "process_max_fds": WORKER_MAX_FDS,
}


def sample_worker_process() -> None:
    """Copy this worker's CPU, memory and file descriptors into its per-pid gauges."""
    for family in _process.collect():
        for sample in family.samples:
            gauge = _PROCESS_GAUGES.get(sample.name)
            if gauge is not None:
                gauge.set(sample.value)


def observe_loop_lag(seconds: float) -> None:
    """Record how late the event loop ran its probe and the collections since; warn of a stall all connections felt."""
    LOOP_LAG.observe(seconds)
    flush_gc_pauses()  # every probe: the collections reach Prometheus within LOOP_PROBE_SECONDS
    if seconds >= LOOP_STALL_WARNING_SECONDS:
        log.warning("worker event loop stalled", extra={"fields": {"seconds": round(seconds, 3)}})


class GcPauseTimer:
    """Time each garbage collection of this process; flush() adds them to vora_worker_gc_pause_seconds.

    A collection starts at whatever allocation set it off, possibly inside a metric write that holds
    prometheus-client's one multiprocess lock, which is not reentrant: observing there would wait for
    ever. So the callback only counts into plain integers per bucket, as DeliveryTally does.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self._counts = [[0] * (len(GC_PAUSE_BUCKETS) + 1) for _ in GC_GENERATIONS]
        self._sums = [0.0 for _ in GC_GENERATIONS]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """Note a collection's start; at its stop, count how long it took."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        seconds, generation = time.perf_counter() - self._started, info["generation"]
        self._counts[generation][bisect.bisect_left(GC_PAUSE_BUCKETS, seconds)] += 1
        self._sums[generation] += seconds

    def flush(self) -> None:
        """Add the collections counted since the last flush to the histogram (never from a collection)."""
        for generation, counts in zip(GC_GENERATIONS, self._counts, strict=True):
            if not any(counts):
                continue
            child = GC_PAUSES.labels(generation)
            _add_counted(child, counts)  # a collection during this flush counts towards the next one
            total = self._sums[int(generation)]
            self._sums[int(generation)] -= total  # no container is made in between: no collection can run there
            child._sum.inc(total)


def time_garbage_collections() -> GcPauseTimer:
    """Time this process's garbage collections from now on (one timer, however often called) and return it."""
    for callback in gc.callbacks:
        if isinstance(callback, GcPauseTimer):
            return callback
    timer = GcPauseTimer()
    gc.callbacks.append(timer)
    return timer


def flush_gc_pauses() -> None:
    """Add the collections this process's timer counted to vora_worker_gc_pause_seconds."""
    for callback in gc.callbacks:
        if isinstance(callback, GcPauseTimer):
            callback.flush()


def set_connection_limit(limit: int) -> None:
    """Publish this worker's connection limit beside its open connections, at zero connections open."""
    CONNECTION_LIMIT.set(limit)
    for transport in TRANSPORTS:
        OPEN_CONNECTIONS.labels(transport)


class SharedStateCollector(Collector):
    """Read, at scrape time, what the instance shares with every other: Redis' health and the push queue.

    Registered in the process that serves the metrics (gunicorn's master): one Redis round trip per
    scrape, bounded by the client's timeout. Every instance reports the same queue; take max().
    """

    def __init__(self, read_queue: Any) -> None:
        self._read_queue = read_queue  # () -> (jobs, oldest job's age in seconds); raises when Redis fails

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """Yield vora_redis_up and, when Redis answered, the push queue's depth and age."""
        started = time.perf_counter()
        try:
            jobs, age = self._read_queue()
        except Exception:  # noqa: BLE001 - any failure to read is "Redis is down" for this scrape
            yield GaugeMetricFamily("vora_redis_up", "1 when Redis answered the metrics scrape's read, else 0.", 0)
            return
        yield GaugeMetricFamily("vora_redis_up", "1 when Redis answered the metrics scrape's read, else 0.", 1)
        yield GaugeMetricFamily(
            "vora_redis_scrape_read_seconds", "Time the scrape's Redis read took.", time.perf_counter() - started
        )
        yield GaugeMetricFamily("vora_push_queue_jobs", "Jobs in the shared push queue (read at scrape time).", jobs)
        yield GaugeMetricFamily(
            "vora_push_queue_oldest_age_seconds", "Age of the shared push queue's oldest job (0 when empty).", age
        )


# labels() checks, locks and looks up its values on every call: each request's two children, kept by their labels.
_request_children: dict[tuple[str | None, str, int], tuple[Any, Any]] = {}


def observe_request(operation: str | None, method: str, status: int, seconds: float) -> None:
    """Record one served HTTP request."""
    children = _request_children.get((operation, method, status))
    if children is None:
        label = operation or "unmatched"
        children = (HTTP_REQUESTS.labels(label, method, str(status)), HTTP_LATENCY.labels(label))
        _request_children[(operation, method, status)] = children
    children[0].inc()
    children[1].observe(seconds)
