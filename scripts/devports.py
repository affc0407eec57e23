"""Tell who holds the ports `make run` needs, and stop what an earlier `make run` left listening on them.

usage: devports.py check PORT...   exit 1, naming each holder, when any of the ports is taken
       devports.py stop PORT...    stop the VORA and dev authorization servers listening on the ports
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import psutil

# What `make run` starts: VORA's gunicorn (master and workers) and the dev authorization server.
_OURS = ("vora.gunicorn_conf", "devauth/server.js", "vora serve")
_STOP_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Holder:
    """A process listening on a port."""

    port: int
    pid: int | None
    command: str

    @property
    def is_ours(self) -> bool:
        """Tell whether an earlier `make run` started this process."""
        return any(marker in self.command for marker in _OURS)

    def describe(self) -> str:
        """Say which process holds the port, in one line."""
        if self.pid is None:
            return f"port {self.port} is taken by a process this user cannot see"
        return f"port {self.port} is held by pid {self.pid}: {self.command[:160]}"


def _command_of(pid: int | None) -> str:
    if pid is None:
        return ""
    try:
        return " ".join(psutil.Process(pid).cmdline()) or psutil.Process(pid).name()
    except psutil.Error:
        return "(exited)"


def holders(ports: list[int]) -> list[Holder]:
    """List the processes that listen on any of the ports, one per port and process."""
    wanted = set(ports)
    found: dict[tuple[int, int | None], Holder] = {}
    for connection in psutil.net_connections(kind="inet"):
        if connection.status != psutil.CONN_LISTEN or not connection.laddr:
            continue
        port = connection.laddr.port
        if port in wanted and (port, connection.pid) not in found:
            found[port, connection.pid] = Holder(port, connection.pid, _command_of(connection.pid))
    return sorted(found.values(), key=lambda holder: (holder.port, holder.pid or 0))


def check(ports: list[int]) -> int:
    """Print who holds each taken port and return 1, or return 0 when all are free."""
    taken = holders(ports)
    for holder in taken:
        hint = "  (left by an earlier `make run`: `make stop` ends it)" if holder.is_ours else ""
        print(f"make run: {holder.describe()}{hint}", file=sys.stderr)
    if taken:
        print("make run: free these ports, or choose others (PORT=, SERVER_API_PORT=, AUTH_PORT=)", file=sys.stderr)
    return 1 if taken else 0


def _group_leader(pid: int) -> psutil.Process:
    """Return the process whose children include pid's whole server: gunicorn's master for one of its workers."""
    process = psutil.Process(pid)
    parent = process.parent()
    while parent is not None and any(marker in " ".join(parent.cmdline()) for marker in _OURS):
        process, parent = parent, parent.parent()
    return process


def stop(ports: list[int]) -> int:
    """Stop VORA's and the dev authorization server's processes that listen on the ports; name any other holder."""
    leaders: dict[int, psutil.Process] = {}
    others = []
    for holder in holders(ports):
        if holder.pid is None or not holder.is_ours:
            others.append(holder)
            continue
        try:
            leader = _group_leader(holder.pid)
        except psutil.Error:
            continue
        leaders[leader.pid] = leader
    for leader in leaders.values():
        print(f"make stop: stopping pid {leader.pid}: {_command_of(leader.pid)[:120]}")
        try:
            family = [leader, *leader.children(recursive=True)]
            leader.terminate()
        except psutil.Error:
            continue
        _gone, alive = psutil.wait_procs(family, timeout=_STOP_WAIT_SECONDS)
        for process in alive:
            process.kill()
    for holder in others:
        print(f"make stop: not stopping what VORA did not start: {holder.describe()}", file=sys.stderr)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(h.is_ours for h in holders(ports)):
        time.sleep(0.1)
    return 0


def main(argv: list[str]) -> int:
    """Run the command line."""
    if len(argv) < 2 or argv[0] not in {"check", "stop"} or not all(arg.isdigit() for arg in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    ports = [int(arg) for arg in argv[1:] if int(arg) > 0]
    return check(ports) if argv[0] == "check" else stop(ports)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
