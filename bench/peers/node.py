"""Start the Node peers (server.js), their publisher (publish.js) and the Node load generator (load.js).

The Node packages are those bench/peers/package-lock.json pins, installed by `make install`
(npm ci). Each peer is a Node cluster of WORKERS workers on one loopback port and the
benchmark's own Redis, started and stopped through the tests' process harness like every other
child of the benchmark; the servers' memory and CPU are read as VORA's (bench.procs.Server:
the primary and its workers).
"""

from __future__ import annotations

import json
import select
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import Launcher, Server
from bench.wsclient import WsLoad
from tests.harness.ports import free_port
from tests.harness.procs import ManagedProcess
from tests.harness.wait import wait_for

PEERS_DIR = Path(__file__).resolve().parent
INSTALLED = PEERS_DIR / "node_modules" / ".package-lock.json"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Peer:
    """One peer: its name in server.js, the protocol its clients speak and how the tables call it."""

    kind: str
    protocol: str  # what load.js speaks to it: ws or socketio
    label: str


PEERS = (
    Peer("socketio-streams", "socketio", "Socket.IO 4 + redis-streams-adapter"),
    Peer("socketio-redis", "socketio", "Socket.IO 4 + redis-adapter"),
    Peer("ws", "ws", "Node ws relay"),
)


def node_binary() -> str:
    """Return the path of node, or raise when it or the pinned packages are missing."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed (make install installs npm and node)")
    if not INSTALLED.exists():
        raise RuntimeError(f"the peers' packages are not installed: run make install (npm ci --prefix {PEERS_DIR})")
    return node


def start_peer(launcher: Launcher, peer: Peer, redis_url: str, workers: int, prefix: str) -> Server:
    """Start a peer's Node cluster on a free loopback port and return it once every worker reads from Redis."""
    port = free_port()
    env = {
        "PEER_KIND": peer.kind,
        "PEER_PORT": str(port),
        "PEER_REDIS_URL": redis_url,
        "PEER_WORKERS": str(workers),
        "PEER_PREFIX": prefix,
    }
    name = f"peer-{peer.kind}-{port}"
    process = launcher.start([node_binary(), str(PEERS_DIR / "server.js")], name, env)
    server = Server(process, port, process.log_path, name=peer.kind)
    try:
        wait_for(
            lambda: f"ready {peer.kind} {port}" in server.log(),
            READY_TIMEOUT,
            what=f"{peer.label} to be ready",
            abort=process.exit_reason,
        )
    except BaseException:
        process.stop(STOP_TIMEOUT)
        raise
    return server


def peer_url(server: Server, peer: Peer, identity: str) -> str:
    """Return the URL a client of identity opens on a peer."""
    scheme = "http" if peer.protocol == "socketio" else "ws"
    return f"{scheme}://127.0.0.1:{server.port}/?identity={identity}"


class NodeLoad(WsLoad):
    """The Node load generator (load.js), behind bench/wsclient.py's command interface."""

    def __init__(self, procs: Launcher, name: str, protocol: str) -> None:
        # Not WsLoad.__init__, which would start the Python client: everything else is shared.
        self.child = procs.start([node_binary(), str(PEERS_DIR / "load.js"), protocol], name, pipes=True)


class NodePublisher:
    """A peer's publisher process (publish.js): one event at a time, or a whole phase paced or flat out."""

    def __init__(self, procs: Launcher, name: str, peer: Peer, redis_url: str, prefix: str) -> None:
        env = {"PEER_REDIS_URL": redis_url, "PEER_PREFIX": prefix}
        self.child: ManagedProcess = procs.start(
            [node_binary(), str(PEERS_DIR / "publish.js"), peer.kind], name, env, pipes=True
        )

    def _call(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.child.stdin.write((json.dumps(command) + "\n").encode())
        self.child.stdin.flush()
        ready, _, _ = select.select([self.child.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"the peer publisher did not answer {command['cmd']!r} within {timeout:.0f}s")
        line = self.child.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer publisher exited during {command['cmd']!r}: {self.child.exit_reason()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the peer publisher failed {command['cmd']!r}: {reply['error']}")
        return reply

    def __call__(self, identity: str, event_type: str, data: dict[str, Any]) -> int:
        """Publish one event with this data and return its sequence number."""
        return int(self._call({"cmd": "one", "identity": identity, "type": event_type, "data": data}, 30)["sequence"])

    def send(self, publish: Any, ids: list[str], count: int, rate: float | None) -> dict[str, Any]:
        """Publish a phase of count events round-robin over ids at rate per second (None: flat out)."""
        timeout = 60 + (count / rate if rate else 0)
        return self._call({"cmd": "publish", "ids": ids, "count": count, "rate": rate}, timeout)

    def stop(self) -> None:
        """Ask the publisher to exit; kill it if it does not."""
        try:
            self._call({"cmd": "exit"}, 10)
            self.child.wait(10)
        except (RuntimeError, OSError, ValueError):
            pass
        self.child.stop(2.0)
