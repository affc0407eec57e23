"""The harness itself: free ports, child processes and standalone servers that start, crash, restart and always end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testbed.ports import CLUSTER_BUS_OFFSET, MAX_CLUSTER_PORT
from testbed.vora_server import REPO
from tests.harness import ManagedProcess, RedisServer, free_ports, live_processes, port_is_free, wait_for

pytestmark = [pytest.mark.topology, pytest.mark.slow]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pid_running(pid: int) -> bool:
    # An orphan's zombie lingers where nothing reaps it (a container's pid 1): dead all the same.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_piped_child_hands_back_its_stdout_and_logs_its_stderr(tmp_path: Path) -> None:
    """A child started with pipes reads stdin, answers on stdout, logs stderr, and its exit status is kept."""
    script = "import sys; print(sys.stdin.readline().upper(), end=''); print('oops', file=sys.stderr); sys.exit(3)"
    child = ManagedProcess([sys.executable, "-c", script], cwd=tmp_path, log_path=tmp_path / "child.log", pipes=True)
    child.start()
    child.stdin.write(b"hello\n")
    output = child.communicate(timeout=30)
    child.stop()
    assert output == b"HELLO\n"
    assert child.returncode == 3
    assert child.log_tail() == "oops"
    assert child not in live_processes()


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    """A SIGKILLed parent, whose atexit never runs, leaves no child behind: the kernel kills it too."""
    parent_script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from testbed.procs import ManagedProcess
        log_path = Path({str(tmp_path)!r}) / "child.log"
        sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
        child = ManagedProcess(sleeper, cwd=Path.cwd(), log_path=log_path)
        child.start()
        print(child.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    parent = subprocess.run(
        [sys.executable, "-c", parent_script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    child_pid = int(parent.stdout)
    try:
        wait_for(lambda: not _pid_running(child_pid), 15, what="the orphaned child to be killed")
    finally:
        if _pid_running(child_pid):
            os.killpg(child_pid, signal.SIGKILL)


def test_free_ports_are_distinct_and_leave_room_for_the_cluster_bus() -> None:
    """Cluster ports are distinct, below 55535 and have their bus port free too."""
    ports = free_ports(6, cluster_bus=True)
    assert len(set(ports)) == 6
    assert set(ports).isdisjoint({p + CLUSTER_BUS_OFFSET for p in ports})
    for port in ports:
        assert port < MAX_CLUSTER_PORT
        assert port_is_free(port)
        assert port_is_free(port + CLUSTER_BUS_OFFSET)


def test_server_survives_kill_and_restart_on_the_same_port() -> None:
    """A killed server is gone at once and restart() brings it back on its port."""
    with RedisServer() as server:
        assert server.execute("SET", "k", "v") in {True, "OK"}
        first_pid = server.pid
        assert first_pid is not None
        server.kill()
        assert not _pid_alive(first_pid)
        assert not server.running
        server.restart()
        assert server.running
        assert server.pid != first_pid
        assert server.execute("PING") is True
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        workdir = server.workdir
    assert not server.running
    assert not workdir.exists()
    assert server not in live_processes()


def test_server_is_stopped_when_the_block_raises() -> None:
    """An exception inside the with-block still ends the server process."""
    pids: list[int | None] = []

    def fail_inside() -> None:
        with RedisServer() as server:
            pids.append(server.pid)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    (pid,) = pids
    assert pid is not None
    assert not _pid_alive(pid)


def test_server_on_a_taken_port_fails_fast_with_its_log() -> None:
    """Starting on a port someone else holds raises with redis-server's own complaint and leaves nothing behind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = RedisServer(port)
        with pytest.raises(RuntimeError, match="exited early"):
            server.start()
        server.close()
    assert not server.running
    assert not live_processes()
