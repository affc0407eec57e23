"""How a real VORA server is started and known to be live: one command line for the tests and the benchmark."""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.ports import HOST, free_port
from testbed.procs import ManagedProcess
from testbed.wait import wait_for

REPO = Path(__file__).resolve().parents[1]


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


STOP_TIMEOUT = 15.0  # a draining worker may take VORA_GRACEFUL_TIMEOUT (10 s in tests)
LIVE_TIMEOUT = 30.0


@dataclass
class RunningServer:
    """A gunicorn process serving VORA, with its base URLs."""

    process: ManagedProcess
    port: int
    log_path: Path
    metrics_port: int = 0
    server_api_port: int = 0

    @property
    def server_api_url(self) -> str:
        """Return the server API's base URL (it listens only when a server API key is configured)."""
        return f"http://127.0.0.1:{self.server_api_port}/vora/server/v1"

    @property
    def metrics_url(self) -> str:
        """Return the operators' Prometheus URL."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def base_url(self) -> str:
        """Return the REST base URL."""
        return f"http://127.0.0.1:{self.port}/vora"

    @property
    def ws_url(self) -> str:
        """Return the WebSocket URL without a token."""
        return f"ws://127.0.0.1:{self.port}/vora/ws"

    def log(self) -> str:
        """Return what the server has logged so far."""
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """Return the pids of the gunicorn workers."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False).stdout
        return [int(pid) for pid in out.split()]


def server_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return a server's whole environment: this process's, a metrics and a server API port of its own, then env."""
    # Ports of its own, so that several servers can run side by side.
    return {**os.environ, "VORA_METRICS_PORT": str(free_port()), "VORA_SERVER_API_PORT": str(free_port()), **env}


def start_server(argv: Sequence[str], env: Mapping[str, str], log_path: Path, port: int, name: str) -> ManagedProcess:
    """Start a gunicorn server whose liveness answers on a loopback port and return it once it does."""
    process = ManagedProcess(argv, cwd=REPO, log_path=log_path, env=env, name=name)
    process.start()
    try:
        wait_for(lambda: is_live(port), LIVE_TIMEOUT, what=f"{name} to be live", abort=process.exit_reason)
    except BaseException:
        process.stop(timeout=STOP_TIMEOUT)
        raise
    return process


@contextlib.contextmanager
def running_server(
    env: dict[str, str], log_dir: Path, workers: int = 1, port: int | None = None
) -> Iterator[RunningServer]:
    """Run `vora serve` with these VORA_* variables until the block ends."""
    port = port or free_port()
    full_env = server_env(env)
    process = start_server(serve_argv(port, workers), full_env, log_dir / f"server-{port}.log", port, "vora")
    try:
        yield RunningServer(
            process, port, process.log_path, int(full_env["VORA_METRICS_PORT"]), int(full_env["VORA_SERVER_API_PORT"])
        )
    finally:
        process.stop(timeout=STOP_TIMEOUT)
