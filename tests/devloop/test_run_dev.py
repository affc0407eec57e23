"""Tests of the local loop: scripts/run-dev.sh (what `make run` execs) and scripts/stop-dev.sh (`make stop`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from testbed.ports import free_ports
from testbed.procs import ManagedProcess
from testbed.wait import port_accepts, wait_for
from vora.core.settings import Settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SERVER_KEY = "devloop-server-key-0123456789abcdefghijklmnop"
READY = "make run: VORA is ready"
START_TIMEOUT = 60.0


@dataclass
class DevLoop:
    """The ports, files and environment of one run of run-dev.sh."""

    vora_port: int
    server_api_port: int
    auth_port: int
    metrics_port: int
    run_dir: Path
    env: dict[str, str]

    @property
    def ports(self) -> list[int]:
        """Return every port the run listens on."""
        return [self.vora_port, self.server_api_port, self.auth_port, self.metrics_port]

    def script(self, log: Path) -> ManagedProcess:
        """Return run-dev.sh, not started yet, logging to log."""
        argv = ["bash", "scripts/run-dev.sh", "127.0.0.1", str(self.vora_port), "1", str(self.auth_port)]
        return ManagedProcess(argv, cwd=REPO, log_path=log, env=self.env, name="run-dev.sh")

    def listening(self) -> list[int]:
        """Return the ports of this run that still accept connections."""
        return [port for port in self.ports if port_accepts(port)]


@pytest.fixture
def loop(settings: Settings, tmp_path: Path) -> Iterator[DevLoop]:
    """Describe a run on free ports against the test Redis, and stop whatever it leaves behind."""
    vora_port, server_api_port, auth_port, metrics_port = free_ports(4)
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "VORA_RUN_DIR": str(run_dir),
        "VORA_REDIS_URL": settings.redis_url,
        "VORA_DEV_KEY": str(settings.dev_key),
        "VORA_SERVER_API_KEYS": SERVER_KEY,
        "VORA_SERVER_API_PORT": str(server_api_port),
        "VORA_METRICS_PORT": str(metrics_port),
        "DEMO_USER": "demo",
        "DEMO_PASSWORD": "demo",
        "SERVICE_CLIENT": "demo-service",
        "SERVICE_SECRET": "demo-service-secret",
    }
    dev_loop = DevLoop(vora_port, server_api_port, auth_port, metrics_port, run_dir, env)
    yield dev_loop
    # A failed test may leave servers in their own process groups: stop them the way `make stop` does.
    subprocess.run(
        [".venv/bin/python", "scripts/devports.py", "stop", *map(str, dev_loop.ports)], cwd=REPO, check=False
    )


def await_ready(script: ManagedProcess) -> None:
    """Wait until run-dev.sh prints its ready line."""
    wait_for(
        lambda: READY in script.log_path.read_text(errors="replace"),
        START_TIMEOUT,
        what="the ready line",
        abort=script.exit_reason,
    )


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_terminals_group_stops_every_server(loop: DevLoop, tmp_path: Path, sig: int) -> None:
    """SIGHUP (the terminal closed), Ctrl-C and SIGTERM to the script's group leave no server and free every port."""
    with loop.script(tmp_path / "run.log") as script:
        await_ready(script)
        assert loop.listening() == loop.ports
        assert script.pid is not None
        os.killpg(script.pid, sig)
        assert script.wait(40), script.log_tail()
        assert "make run: stopped" in script.log_tail()
    assert loop.listening() == []
    assert not (loop.run_dir / "run.pid").exists()


def test_the_ready_line_comes_when_vora_answers(loop: DevLoop, tmp_path: Path) -> None:
    """The ready line is printed once, after the gunicorn banner, when readiness answers."""
    with loop.script(tmp_path / "run.log") as script:
        await_ready(script)
        log = script.log_path.read_text()
        assert log.count(READY) == 1
        assert log.index("Booting worker") < log.index(READY)
        assert f"http://localhost:{loop.vora_port}/vora/" in log


def test_make_run_turns_the_console_simulator_on(loop: DevLoop, tmp_path: Path) -> None:
    """`make run` serves the landing page and the simulator, which asks for a token instead of answering 404."""
    with loop.script(tmp_path / "run.log") as script:
        await_ready(script)
        base = f"http://127.0.0.1:{loop.vora_port}/vora"
        assert requests.get(f"{base}/", timeout=10).status_code == 200
        simulator = requests.get(f"{base}/console/simulator", timeout=10)
        assert simulator.status_code == 401, simulator.text


def test_vora_exiting_stops_the_authorization_server(loop: DevLoop, tmp_path: Path) -> None:
    """When VORA's gunicorn dies, the script stops the dev authorization server and exits non-zero."""
    with loop.script(tmp_path / "run.log") as script:
        await_ready(script)
        os.kill(_gunicorn_master(loop.vora_port), signal.SIGKILL)
        assert script.wait(30), script.log_tail()
        assert script.exited()
    assert loop.listening() == []


def test_make_stop_ends_a_running_make_run(loop: DevLoop, tmp_path: Path) -> None:
    """stop-dev.sh finds the run through its pid file, stops it, and leaves every port free."""
    with loop.script(tmp_path / "run.log") as script:
        await_ready(script)
        stopped = subprocess.run(
            ["bash", "scripts/stop-dev.sh", *map(str, loop.ports)],
            cwd=REPO,
            env=loop.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert stopped.returncode == 0, stopped.stderr
        assert script.wait(10), script.log_tail()
    assert loop.listening() == []
    assert "nothing of make run is left running" in stopped.stdout


def test_a_taken_port_is_named_before_anything_starts(loop: DevLoop, tmp_path: Path) -> None:
    """A port already in use stops the script at once, naming the process that holds it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", loop.vora_port))
        holder.listen()
        with loop.script(tmp_path / "run.log") as script:
            assert script.wait(30), script.log_tail()
            log = script.log_path.read_text()
    assert f"port {loop.vora_port} is held by pid {os.getpid()}" in log
    assert "Starting gunicorn" not in log
    assert not port_accepts(loop.auth_port)


def test_stop_spares_what_vora_did_not_start(loop: DevLoop) -> None:
    """`make stop` names a foreign process on one of the ports and leaves it running."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", loop.vora_port))
        holder.listen()
        stopped = subprocess.run(
            [".venv/bin/python", "scripts/devports.py", "stop", str(loop.vora_port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert port_accepts(loop.vora_port)
    assert "not stopping what VORA did not start" in stopped.stderr


def _gunicorn_master(port: int) -> int:
    """Return the pid of the gunicorn master bound to the port (its workers' parent)."""
    bound = [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit() and f"127.0.0.1:{port}" in _cmdline(int(pid)) and "gunicorn" in _cmdline(int(pid))
    ]
    parents = {pid: int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) for pid in bound}
    (master,) = [pid for pid in bound if parents[pid] not in bound]
    return master


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_ensure_redis_warns_before_writing_into_a_redis_it_did_not_start(
    settings: Settings, redisdb: Any, tmp_path: Path
) -> None:
    """A Redis that answers but that make run did not start gets a warning naming its database and key count."""
    redisdb.set("someone-elses-key", "1")
    keys_now = redisdb.dbsize()  # servers of the file's other tests may have left keys of their own
    ran = subprocess.run(
        ["bash", "scripts/ensure-redis.sh", settings.redis_url],
        cwd=REPO,
        env={**os.environ, "VORA_RUN_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "was not started by make run" in ran.stderr
    assert f"database 0 (which holds {keys_now} keys now)" in ran.stderr


def test_ensure_redis_knows_the_redis_it_started(settings: Settings, redisdb: Any, tmp_path: Path) -> None:
    """The Redis whose pid make run recorded is used without a warning."""
    (tmp_path / "redis.pid").write_text(str(redisdb.info("server")["process_id"]))
    ran = subprocess.run(
        ["bash", "scripts/ensure-redis.sh", settings.redis_url],
        cwd=REPO,
        env={**os.environ, "VORA_RUN_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "started by make run" in ran.stdout
    assert ran.stderr == ""
