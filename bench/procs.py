"""Start, watch and always stop the processes the benchmark needs: Redis, servers, load generators."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
import redis

# The benchmark starts VORA exactly as the tests do, from the same harness (it imports nothing else of tests/).
from tests.harness.ports import free_port
from tests.harness.vora_server import is_live, serve_argv

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
NOFILE = 65536
_PR_SET_PDEATHSIG = 1
try:  # looked up once here: a forked child must only call it
    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def raise_nofile_limit(wanted: int = NOFILE) -> int:
    """Raise this process' open-file limit (children inherit it) and return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_split() -> tuple[float, float]:
    """Return the CPU seconds the whole machine has been busy and those this benchmark's process tree used."""
    machine = psutil.cpu_times()
    busy = (
        machine.user + machine.nice + machine.system + getattr(machine, "irq", 0.0) + getattr(machine, "softirq", 0.0)
    )
    me = psutil.Process()
    ours = 0.0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            ours += times.user + times.system + times.children_user + times.children_system
    return busy, ours


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this child when the benchmark process dies (Linux only)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Processes:
    """Every child the benchmark starts, each in its own process group, stopped together at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._children: list[subprocess.Popen[Any]] = []

    def spawn(
        self,
        argv: Sequence[str],
        name: str,
        env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
    ) -> subprocess.Popen[Any]:
        """Start a child in a new session; its stderr (and stdout unless given) go to log_dir/name.log."""
        log = (self.log_dir / f"{name}.log").open("ab")
        try:
            child = subprocess.Popen(
                list(argv),
                env={**os.environ, **(env or {})},
                cwd=ROOT,
                stdin=stdin,
                stdout=log if stdout is None else stdout,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - the child only calls prctl, looked up before
            )
        finally:
            log.close()
        self._children.append(child)
        return child

    def run(self, argv: Sequence[str], name: str, timeout: float, env: dict[str, str] | None = None) -> str:
        """Run a child to completion within timeout seconds and return its stdout."""
        child = self.spawn(argv, name, env, stdout=subprocess.PIPE)
        try:
            out, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(child, grace=1.0)
            raise RuntimeError(f"{name} did not finish within {timeout:.0f}s") from None
        finally:
            self.stop(child, grace=1.0)
        if child.returncode != 0:
            raise RuntimeError(f"{name} exited with {child.returncode}; see {self.log_dir / name}.log")
        return out.decode() if isinstance(out, bytes) else str(out)

    def stop(self, child: subprocess.Popen[Any], grace: float = 10.0) -> None:
        """Stop a child's whole process group: SIGTERM, then SIGKILL after grace seconds."""
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=grace)
        # Whatever is left in the group (a worker that outlived its master) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if child in self._children:
            self._children.remove(child)

    def stop_all(self) -> None:
        """Stop every child still running, newest first."""
        for child in reversed(list(self._children)):
            self.stop(child, grace=5.0)


def wait_until(condition: Any, timeout: float, what: str, child: subprocess.Popen[Any] | None = None) -> None:
    """Poll condition() until it is true, failing at the deadline or when child exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {child.returncode}")
        with contextlib.suppress(OSError, redis.RedisError, http.client.HTTPException):
            if condition():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready within {timeout:.0f}s")


@dataclass
class RedisServer:
    """The benchmark's own redis-server on a free loopback port."""

    process: subprocess.Popen[Any]
    port: int

    @property
    def url(self) -> str:
        """Return its redis:// URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """Return a new client."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)


def start_redis(procs: Processes, workdir: Path) -> RedisServer:
    """Start a throw-away redis-server (no persistence) and wait until it answers PING."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("redis-server is missing: `make redis-server` (or apt-get install redis-server) first")
    port = free_port()
    data = workdir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(data),
        "--maxclients", "10000",
        "--daemonize", "no",
    ]  # fmt: skip
    child = procs.spawn(argv, "redis")
    server = RedisServer(child, port)
    client = server.client()
    wait_until(lambda: client.ping(), 15, "redis-server", child)
    client.close()
    return server


@dataclass
class Server:
    """A gunicorn server (VORA or the baseline app) on a loopback port."""

    name: str
    process: subprocess.Popen[Any]
    port: int

    @property
    def base_url(self) -> str:
        """Return the REST base URL."""
        return f"http://127.0.0.1:{self.port}/vora"

    @property
    def ws_url(self) -> str:
        """Return the WebSocket URL without a query."""
        return f"ws://127.0.0.1:{self.port}/vora/ws"

    def processes(self) -> list[psutil.Process]:
        """Return the gunicorn master and its workers."""
        master = psutil.Process(self.process.pid)
        return [master, *master.children(recursive=True)]

    def worker_pids(self) -> list[int]:
        """Return the pids of the workers."""
        return [p.pid for p in psutil.Process(self.process.pid).children(recursive=True)]

    def connections_per_worker(self) -> dict[str, int]:
        """Count the established connections each worker holds on the server's port."""
        counts = {}
        for pid in self.worker_pids():
            try:
                conns = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                continue
            counts[str(pid)] = sum(
                1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == self.port
            )
        return counts

    def rss(self) -> int:
        """Return the summed resident memory of master and workers, in bytes."""
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        """Return the user+system CPU seconds master and workers have used so far."""
        total = 0.0
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total


def _wait_workers(server: Server, workers: int, timeout: float) -> None:
    wait_until(lambda: len(server.worker_pids()) >= workers, timeout, f"{server.name} workers", server.process)


def start_vora(procs: Processes, env: dict[str, str], workers: int, name: str = "vora") -> Server:
    """Start `vora serve` (gunicorn, gevent workers) the way the tests do and wait until it is live."""
    port = free_port()
    argv = serve_argv(port, workers)
    env = {"VORA_METRICS_PORT": str(free_port()), **env}  # metrics stay on, as by default, on a port of its own
    server = Server(name, procs.spawn(argv, f"{name}-{port}", env), port)
    wait_until(lambda: is_live(port), 30, name, server.process)
    _wait_workers(server, workers, 30)
    return server


def start_baseline(procs: Processes, env: dict[str, str], workers: int, name: str = "baseline") -> Server:
    """Start the bare Flask baseline app under VORA's own gunicorn settings and wait until it is live."""
    port = free_port()
    argv = [
        PYTHON, "-m", "gunicorn",
        "--config", "python:bench.baseline_conf",
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
        "bench.baseline_app:create_app()",
    ]  # fmt: skip
    full_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    server = Server(name, procs.spawn(argv, f"{name}-{port}", full_env), port)
    wait_until(lambda: is_live(port), 30, name, server.process)
    _wait_workers(server, workers, 30)
    return server
