"""Gunicorn settings for VORA: gevent workers, JSON logs, draining on SIGTERM."""

from __future__ import annotations

import os
import signal
from typing import Any

import gevent

worker_class = "gevent"
worker_connections = int(os.environ.get("VORA_WORKER_CONNECTIONS", "20000"))
graceful_timeout = int(os.environ.get("VORA_GRACEFUL_TIMEOUT", "20"))
timeout = 30
keepalive = 75
accesslog = None  # vora.access logs each request, without its query string
errorlog = "-"
loglevel = os.environ.get("VORA_LOG_LEVEL", "info").lower()
forwarded_allow_ips = os.environ.get("VORA_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


def post_worker_init(worker: Any) -> None:
    """Start the event hub, and make SIGTERM drain the app before gunicorn's graceful exit."""
    state = worker.wsgi.extensions["vora"]
    state.hub.ensure_started(timeout=0)  # subscribes in the background; sockets wait for it
    lifecycle = state.lifecycle
    previous = signal.getsignal(signal.SIGTERM)

    def drain_then_exit(signum: int, frame: Any) -> None:
        # A signal handler runs in gevent's loop callback: blocking there is forbidden.
        gevent.spawn(lifecycle.drain)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, drain_then_exit)
