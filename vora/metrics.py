"""Prometheus metrics, shared by every gunicorn worker through prometheus-client's multiprocess mode.

The master process sets PROMETHEUS_MULTIPROC_DIR before it forks workers (vora.gunicorn_conf),
so every worker writes its samples to files there and the master serves their sum on the
operators' port. Without that variable (tests, the CLI) the metrics live in this process.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

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
REDIS_FAILURES = Counter("vora_redis_errors_total", "Redis commands that failed, by where they failed.", ["where"])
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
WAKEUP_LATENCY = Histogram(
    "vora_push_wakeup_seconds",
    "Time from a push accepted by the gateway to its device's socket attaching.",
    buckets=(0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0),
)

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


class Metrics:
    """Count what happens on this worker, by short name, into Prometheus and a local tally.

    Deliveries are counted on every socket wake, the hot path: into a plain integer that
    flush() adds to Prometheus (the worker's reactor calls it every second and when a socket
    ends), not with a lock and a multiprocess mmap write each time. The integer is exact under
    gevent, where nothing switches inside an addition.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {}
        self._unflushed_deliveries = 0

    def count(self, name: str, amount: int = 1) -> None:
        """Add amount (negative for the socket gauge) to a named value."""
        if name == "delivered":
            self._unflushed_deliveries += amount
            return
        with self._lock:
            self.values[name] = self.values.get(name, 0) + amount
        if name == "open":
            OPEN_SOCKETS.inc(amount)
        elif name.startswith("redis_error"):
            REDIS_FAILURES.labels(name.partition(":")[2] or "bus").inc(amount)
        else:
            _COUNTERS[name].inc(amount)

    def flush(self) -> None:
        """Add the deliveries counted since the last flush to Prometheus; never blocks."""
        delivered = self._unflushed_deliveries
        if not delivered:
            return
        self._unflushed_deliveries -= delivered
        with self._lock:
            self.values["delivered"] = self.values.get("delivered", 0) + delivered
        EVENTS_DELIVERED.inc(delivered)

    def get(self, name: str) -> int:
        """Return a named value of this app, zero when nothing was counted."""
        unflushed = self._unflushed_deliveries if name == "delivered" else 0
        return self.values.get(name, 0) + unflushed


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
