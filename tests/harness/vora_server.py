"""How a real VORA server is started and known to be live: one command line for the tests and the benchmark."""

from __future__ import annotations

import contextlib
import http.client
import sys

from .ports import HOST


def serve_argv(port: int, workers: int) -> list[str]:
    """Return the command that serves VORA (gunicorn, gevent workers) on a loopback port, as `make run` does."""
    return [sys.executable, "-m", "vora.cli", "serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]


def is_live(port: int) -> bool:
    """Tell whether the VORA server on a loopback port answers liveness with 204."""
    connection = http.client.HTTPConnection(HOST, port, timeout=1)
    try:
        with contextlib.suppress(OSError):
            connection.request("GET", "/vora/health/liveness")
            return connection.getresponse().status == 204
        return False
    finally:
        connection.close()
