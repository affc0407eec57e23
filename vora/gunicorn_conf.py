"""Gunicorn settings for VORA: gevent workers, JSON logs, metrics on a private port, draining on SIGTERM."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vora.core.clock import now_ms
from vora.core.settings import Settings

_settings = Settings.from_env()

# prometheus-client picks multiprocess mode when this is set before it is first imported;
# the master sets it here, before any worker is forked.
_OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="vora-metrics-")
_METRICS_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
for stale in _METRICS_DIR.glob("*.db"):
    stale.unlink()

worker_class = "vora.http.worker.VoraWorker"  # gevent, with bounded request reads and JSON refusals
worker_connections = _settings.worker_connections
# A reconnect storm arrives faster than the workers accept: connects the queue cannot hold are dropped
# and come back only after the kernel's SYN retransmission (1, 3, 7 s). The kernel caps it at somaxconn.
backlog = _settings.listen_backlog
graceful_timeout = _settings.graceful_timeout
timeout = 30
keepalive = 75
accesslog = None  # vora.access logs each request, without its query string
errorlog = "-"
# gunicorn's own lines are formatted like VORA's: JSON, or text for `make run` (VORA_LOG_FORMAT).
logger_class = (
    "vora.observability.logs.TextGunicornLogger"
    if _settings.log_format == "text"
    else "vora.observability.logs.JsonGunicornLogger"
)
loglevel = _settings.log_level.lower()
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

log = logging.getLogger("vora.gunicorn")
WORKER_SAMPLE_SECONDS = 5.0  # how stale a worker's CPU, memory and file-descriptor gauges may be


def on_starting(server: Any) -> None:
    """Log the master's own lines as JSON; bind the server API's listener beside the public one when configured."""
    # The master loads VORA's modules only in its hooks, as gunicorn runs them, never at import of this file.
    from vora.observability.logs import configure_logging, log_uncaught  # noqa: PLC0415

    configure_logging(_settings.log_level, _settings.log_format)
    log_uncaught(log)  # the metrics server's thread runs in this process
    if not _settings.server_api_enabled:
        return
    bind = list(server.cfg.bind)
    if any(address.rsplit(":", 1)[-1] == str(_settings.server_api_port) for address in bind):
        # Requests are routed by the port they arrive on: one port cannot be both.
        raise SystemExit(f"VORA_SERVER_API_PORT {_settings.server_api_port} is also a public --bind port")
    server.cfg.set("bind", [*bind, _settings.server_api_bind])
    server.log.info("server API on http://%s/vora/server/v1", _settings.server_api_bind)


def when_ready(server: Any) -> None:
    """Serve the sum of every worker's metrics on the operators' port (0 turns it off)."""
    if not _settings.metrics_port:
        return
    # Only a master that serves metrics loads them (PROMETHEUS_MULTIPROC_DIR is set by then).
    from prometheus_client import CollectorRegistry, ProcessCollector, multiprocess, start_http_server  # noqa: PLC0415
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    from vora.observability.metrics import SharedStateCollector  # noqa: PLC0415
    from vora.store.client import connect  # noqa: PLC0415
    from vora.store.push import PushStore  # noqa: PLC0415

    # Importing vora.observability.metrics made this process's own live-gauge files (a master is no worker): drop them.
    multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call] # the library leaves it unannotated
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call] # the library leaves it unannotated
    ProcessCollector(registry=registry)  # the master's own process_* metrics; the workers' are vora_worker_*
    queue = PushStore(connect(_settings.redis_url, _settings.readiness_timeout, retry=None, retry_on_error=[]))
    registry.register(SharedStateCollector(lambda: queue.queue_stats(now_ms())))
    try:
        start_http_server(_settings.metrics_port, addr=_settings.metrics_host, registry=registry)
    except OSError as exc:
        # Metrics are for operators; a taken port must not take the API down with it.
        server.log.error("metrics not served on %s:%s: %s", _settings.metrics_host, _settings.metrics_port, exc)
    else:
        server.log.info("metrics on http://%s:%s/metrics", _settings.metrics_host, _settings.metrics_port)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges (its counters stay in the totals)."""
    from prometheus_client import multiprocess  # noqa: PLC0415 - the master loads it only in its hooks

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call] # the library leaves it unannotated


def on_exit(server: Any) -> None:
    """Remove the metrics directory the master created."""
    if _OWN_METRICS_DIR:
        shutil.rmtree(_METRICS_DIR, ignore_errors=True)


def post_worker_init(worker: Any) -> None:
    """Start the event hub and the push worker, and make SIGTERM drain the app before gunicorn's graceful exit."""
    # Imported in the worker, after gevent patched it: the app's modules must never load unpatched in the master.
    from vora.observability.logs import log_uncaught  # noqa: PLC0415
    from vora.observability.metrics import (  # noqa: PLC0415
        LOOP_PROBE_SECONDS,
        observe_loop_lag,
        sample_worker_process,
        set_connection_limit,
        time_garbage_collections,
    )
    from vora.services import services_of  # noqa: PLC0415

    log_uncaught(log)
    # gevent prints a failed greenlet's traceback to stderr as text: log it as a JSON line instead.
    worker.log_greenlet_failures(log)
    set_connection_limit(worker.cfg.worker_connections)
    worker.run_every(WORKER_SAMPLE_SECONDS, sample_worker_process)
    services = services_of(worker.wsgi)
    # The reconnect window's estimate of the instance when the other workers' metrics files cannot be read.
    services.reconnect_window.workers = worker.cfg.workers
    services.start_workers()
    # What start-up allocated lives as long as the worker: keep it out of every later
    # collection, whose full passes otherwise stall all sockets for 40-100 ms (docs/BENCHMARKS.md).
    gc.collect()
    gc.freeze()
    time_garbage_collections()
    worker.watch_loop(LOOP_PROBE_SECONDS, observe_loop_lag)
    worker.drain_on_sigterm(services.lifecycle.drain)
