"""Gunicorn settings of the baseline app: VORA's own values, without VORA's worker hooks or metrics server."""

from vora.gunicorn_conf import (
    accesslog,
    errorlog,
    forwarded_allow_ips,
    graceful_timeout,
    keepalive,
    loglevel,
    on_exit,  # removes the metrics directory that importing VORA's settings module created
    timeout,
    worker_class,
    worker_connections,
)

__all__ = [
    "accesslog",
    "errorlog",
    "forwarded_allow_ips",
    "graceful_timeout",
    "keepalive",
    "loglevel",
    "on_exit",
    "timeout",
    "worker_class",
    "worker_connections",
]
