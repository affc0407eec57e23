"""Start the benchmark's servers and load generators with the test harness, and measure the servers."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

# The benchmark starts its processes and VORA exactly as the tests do, with the same harness
# (it imports nothing else of tests/): one process manager, one Redis launcher, one server launcher.
from testbed.ports import free_port
from testbed.procs import ManagedProcess
from testbed.vora_server import RunningServer, serve_argv, server_env, start_server
from testbed.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
NOFILE = 65536


def scheduler_waits(pids: Sequence[int]) -> tuple[float, int]:
    """Return the seconds the pids' threads spent runnable but waiting for a CPU, and their time slices, so far.

    /proc/PID/task/TID/schedstat: time on a CPU, time waiting on a run queue, slices run (ns, ns, count).
    """
    waited_ns, slices = 0, 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                    _, waited, runs = stat.read().split()
                    waited_ns += int(waited)
                    slices += int(runs)
    return waited_ns / 1e9, slices


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


@dataclass(frozen=True)
class Launcher:
    """Where the benchmark's children run and log: ROOT and log_dir/NAME.log, each a harness ManagedProcess."""

    log_dir: Path

    def start(
        self, argv: Sequence[str], name: str, env: dict[str, str] | None = None, *, pipes: bool = False
    ) -> ManagedProcess:
        """Start a child in its own session with these extra variables; stop_all() ends whatever is left."""
        child = ManagedProcess(
            argv,
            cwd=ROOT,
            log_path=self.log_dir / f"{name}.log",
            env={**os.environ, **(env or {})},
            name=name,
            pipes=pipes,
        )
        child.start()
        return child

    def run(self, argv: Sequence[str], name: str, timeout: float, env: dict[str, str] | None = None) -> str:
        """Run a child to completion within timeout seconds and return its stdout."""
        child = self.start(argv, name, env, pipes=True)
        try:
            out = child.communicate(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{name} did not finish within {timeout:.0f}s") from None
        finally:
            child.stop(1.0)
        if child.returncode != 0:
            raise RuntimeError(f"{name} exited with {child.returncode}; see {child.log_path}")
        return out.decode()


TRANSPORTS = ("ws", "sse")  # the event channel's: WebSocket at /vora/ws, Server-Sent Events at /vora/sse


@dataclass
class Server(RunningServer):
    """A gunicorn server (VORA or the baseline app) on a loopback port, as the benchmark measures it."""

    name: str = "vora"

    def stream_url(self, transport: str) -> str:
        """Return the event channel's URL, without a token, over a transport: ws (WebSocket) or sse."""
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}")
        return self.ws_url if transport == "ws" else f"http://127.0.0.1:{self.port}/vora/sse"

    def processes(self) -> list[psutil.Process]:
        """Return the gunicorn master and its workers."""
        master = psutil.Process(self.process.pid)
        return [master, *master.children(recursive=True)]

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
        return sum(self.cpu_seconds_by_process().values())

    def cpu_seconds_by_process(self) -> dict[int, float]:
        """Return the user+system CPU seconds of the master and of each worker, by pid (master first)."""
        seconds = {}
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                seconds[proc.pid] = times.user + times.system
        return seconds


def _start(launcher: Launcher, argv: list[str], port: int, env: dict[str, str], workers: int, name: str) -> Server:
    full_env = server_env(env)
    process = start_server(argv, full_env, launcher.log_dir / f"{name}-{port}.log", port, name)
    server = Server(
        process, port, process.log_path, int(full_env["VORA_METRICS_PORT"]), int(full_env["VORA_SERVER_API_PORT"]), name
    )
    wait_for(
        lambda: len(server.worker_pids()) >= workers, 30, what=f"{name}'s {workers} workers", abort=process.exit_reason
    )
    return server


def start_vora(launcher: Launcher, env: dict[str, str], workers: int, name: str = "vora") -> Server:
    """Start `vora serve` (gunicorn, gevent workers) the way the tests do and wait until it is live."""
    port = free_port()
    return _start(launcher, serve_argv(port, workers), port, env, workers, name)


def start_baseline(launcher: Launcher, env: dict[str, str], workers: int, name: str = "baseline") -> Server:
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
    return _start(launcher, argv, port, full_env, workers, name)
