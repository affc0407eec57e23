"""Start the real VORA server (gunicorn with gevent workers) on a loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.ports import free_port
from tests.harness.procs import ManagedProcess
from tests.harness.vora_server import is_live, serve_argv
from tests.harness.wait import wait_for

STOP_TIMEOUT = 15.0  # a draining worker may take VORA_GRACEFUL_TIMEOUT (10 s in tests)


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


@contextlib.contextmanager
def running_server(
    env: dict[str, str], log_dir: Path, workers: int = 1, port: int | None = None
) -> Iterator[RunningServer]:
    """Run `vora serve` with these VORA_* variables until the block ends."""
    port = port or free_port()
    log_path = log_dir / f"server-{port}.log"
    # Each server gets its own metrics port so that several can run side by side.
    full_env = {**os.environ, "VORA_METRICS_PORT": str(free_port()), "VORA_SERVER_API_PORT": str(free_port()), **env}
    process = ManagedProcess(serve_argv(port, workers), cwd=Path.cwd(), log_path=log_path, env=full_env, name="vora")
    with process:
        server = RunningServer(
            process, port, log_path, int(full_env["VORA_METRICS_PORT"]), int(full_env["VORA_SERVER_API_PORT"])
        )
        wait_for(lambda: is_live(port), 30, what="the VORA server to be live", abort=process.exit_reason)
        try:
            yield server
        finally:
            process.stop(timeout=STOP_TIMEOUT)


@dataclass
class RawReply:
    """What a server sent back on a raw connection, split into status, headers and body."""

    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool

    def json(self) -> Any:
        """Parse the body as JSON."""
        return json.loads(self.body)


def read_reply(sock: socket.socket, deadline_s: float = 15.0) -> RawReply:
    """Read one HTTP/1.1 response with a Content-Length from a raw socket, and tell whether the server closed."""
    sock.settimeout(deadline_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a complete response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    closed = False
    if headers.get("connection") == "close":
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:  # closed with bytes of ours still unread
            closed = True
    return RawReply(int(status_line.split()[1]), headers, body[:length], closed)


def raw_exchange(port: int, request: bytes, deadline_s: float = 15.0) -> RawReply:
    """Send raw bytes to a loopback server and read its one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=deadline_s) as sock:
        with contextlib.suppress(OSError):  # a server may refuse before it has read everything
            sock.sendall(request)
        return read_reply(sock, deadline_s)
