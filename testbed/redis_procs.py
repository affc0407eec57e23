"""Real Redis topologies for tests: a standalone server, a three-master Cluster and a Sentinel set.

Every class here is a context manager that starts real redis-server processes in a temporary
directory and, on exit (exceptions included), ends every process it started: SIGTERM to the
process group, SIGKILL after a timeout. Readiness is always awaited by polling with a deadline.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import redis
from redis.cluster import ClusterNode, RedisCluster

from testbed.ports import HOST, free_port, free_ports
from testbed.procs import DEFAULT_STOP_TIMEOUT, Harnessed, ManagedProcess
from testbed.wait import wait_for

REDIS_SERVER = "redis-server"
REDIS_CLI = "redis-cli"
STARTUP_TIMEOUT = 15.0
_PROBE_TIMEOUT = 0.5


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")
    if path is None:
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server)")
    return path


def _info_fields(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    if isinstance(reply, bytes):
        reply = reply.decode()
    fields = {}
    for line in str(reply).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _pairs(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = [str(x) for x in reply]
    return dict(zip(items[::2], items[1::2], strict=True))


class _Workdir:
    """A directory that is either given (and kept) or made in /tmp (and removed on close)."""

    def __init__(self, path: Path | str | None, prefix: str) -> None:
        self._given = path is not None
        self._prefix = prefix
        self._path: Path | None = Path(path) if path is not None else None

    def get(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix=self._prefix))
        self._path.mkdir(parents=True, exist_ok=True)
        return self._path

    def remove(self) -> None:
        if not self._given and self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


class _RedisProcess(Harnessed):
    """What a redis-server process (server or sentinel) shares: start, stop, kill, restart and cleanup."""

    kind = "redis"

    def __init__(
        self,
        port: int | None = None,
        *,
        workdir: Path | str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.host = HOST
        self.startup_timeout = startup_timeout
        self._workdir = _Workdir(workdir, f"vora-{self.kind}-{self.port}-")
        self._proc: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} running={self.running}>"

    @property
    def address(self) -> tuple[str, int]:
        """Return (host, port)."""
        return (self.host, self.port)

    @property
    def workdir(self) -> Path:
        """Return the directory the process runs in (its config, data and log live there)."""
        return self._workdir.get()

    @property
    def log_path(self) -> Path:
        """Return the file the process writes its log to."""
        return self.workdir / f"{self.kind}-{self.port}.log"

    @property
    def running(self) -> bool:
        """Tell whether the process was started and has not exited."""
        return self._proc is not None and not self._proc.exited()

    @property
    def pid(self) -> int | None:
        """Return the pid of the process last started, or None once it was stopped or killed."""
        return self._proc.pid if self._proc is not None else None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def client(self, **kwargs: Any) -> redis.Redis:
        """Return a plain redis-py client for this one process (the caller closes it)."""
        options: dict[str, Any] = {
            "socket_timeout": 2.0,
            "socket_connect_timeout": 2.0,
            "decode_responses": True,
            **kwargs,
        }
        return redis.Redis(host=self.host, port=self.port, **options)

    def execute(self, *args: Any, timeout: float = 2.0) -> Any:
        """Run one command on a fresh connection and return its decoded reply."""
        with contextlib.closing(self.client(socket_timeout=timeout, socket_connect_timeout=timeout)) as conn:
            return conn.execute_command(*args)

    def _answers_as(self, pid: int | None) -> bool:
        # PING alone could be answered by someone else's server on this port; the pid proves it is ours.
        with contextlib.closing(
            self.client(socket_timeout=_PROBE_TIMEOUT, socket_connect_timeout=_PROBE_TIMEOUT, retry=None)
        ) as conn:
            return (
                bool(conn.ping())
                and pid is not None
                and _info_fields(conn.info("server")).get("process_id") == str(pid)
            )

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the process's log."""
        return self._proc.log_tail(lines) if self._proc is not None else "(not started)"

    def start(self) -> Self:
        """Start the process and return once it answers PING."""
        if self._proc is not None:
            raise RuntimeError(f"{self!r} is already started")
        proc = ManagedProcess(self._argv(), cwd=self.workdir, log_path=self.log_path, name=f"{self.kind}:{self.port}")
        proc.start()
        self._proc = proc
        try:
            wait_for(
                lambda: self._answers_as(proc.pid),
                self.startup_timeout,
                what=f"{self.kind} on port {self.port} to answer PING",
                abort=proc.exit_reason,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop the process (SIGTERM, then SIGKILL after timeout); its directory is kept for restart()."""
        if self._proc is not None:
            self._proc.stop(timeout)
            self._proc = None

    def kill(self) -> None:
        """Kill the process with SIGKILL, as a crash would; its directory is kept for restart()."""
        if self._proc is not None:
            self._proc.kill()
            self._proc = None

    def restart(self) -> Self:
        """Stop the process if it runs and start it again on the same port with the same directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the process and remove its directory if the harness made it."""
        self.stop()
        self._workdir.remove()


class RedisServer(_RedisProcess):
    """A standalone redis-server on 127.0.0.1 that keeps nothing on disk."""

    kind = "redis"

    def __init__(
        self,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        *,
        workdir: Path | str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        super().__init__(port, workdir=workdir, startup_timeout=startup_timeout)
        self.extra_args = [str(a) for a in extra_args]

    @property
    def url(self) -> str:
        """Return the redis:// URL of database 0."""
        return f"redis://{self.host}:{self.port}/0"

    def _argv(self) -> list[str]:
        return [
            _binary(REDIS_SERVER),
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
            "--logfile", "",
            *self.extra_args,
        ]  # fmt: skip

    def info(self, section: str) -> dict[str, str]:
        """Return one INFO section as a dict of strings."""
        return _info_fields(self.execute("INFO", section))


class RedisSentinel(_RedisProcess):
    """One Sentinel process monitoring one master, with its own writable config file."""

    kind = "sentinel"

    def __init__(
        self,
        master_port: int,
        port: int | None = None,
        *,
        service: str = "vora",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        workdir: Path | str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        super().__init__(port, workdir=workdir, startup_timeout=startup_timeout)
        self.master_port = master_port
        self.service = service
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    @property
    def config_path(self) -> Path:
        """Return the sentinel's config file (Sentinel rewrites it as it learns)."""
        return self.workdir / f"sentinel-{self.port}.conf"

    def _write_config(self) -> None:
        if self.config_path.exists():  # a restart keeps what the sentinel learnt
            return
        self.config_path.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    f"bind {self.host}",
                    "daemonize no",
                    'logfile ""',
                    f"dir {self.workdir}",
                    "sentinel resolve-hostnames no",
                    "sentinel announce-hostnames no",
                    f"sentinel monitor {self.service} {self.host} {self.master_port} {self.quorum}",
                    f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                    f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {self.service} 1",
                    "",
                ]
            )
        )

    def _argv(self) -> list[str]:
        self._write_config()
        return [_binary(REDIS_SERVER), str(self.config_path), "--sentinel"]

    def master_address(self) -> tuple[str, int] | None:
        """Return the master address this sentinel reports for its service, or None."""
        reply = self.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service, timeout=1.0)
        if not reply:
            return None
        host, port = reply
        return (str(host), int(port))

    def master_state(self) -> dict[str, str]:
        """Return SENTINEL MASTER for the service as a dict of strings."""
        # Sent raw: redis-py 6.4's sentinel_master() breaks its own reply parser on a plain client.
        return _pairs(self.execute("SENTINEL", "MASTER", self.service, timeout=1.0))

    def replicas(self) -> list[dict[str, str]]:
        """Return SENTINEL REPLICAS for the service as dicts of strings."""
        return [_pairs(r) for r in self.execute("SENTINEL", "REPLICAS", self.service, timeout=1.0)]

    def sentinels(self) -> list[dict[str, str]]:
        """Return SENTINEL SENTINELS (the other sentinels this one knows) as dicts of strings."""
        return [_pairs(r) for r in self.execute("SENTINEL", "SENTINELS", self.service, timeout=1.0)]


class RedisCluster3(Harnessed):
    """A Redis Cluster of three masters and no replicas, created with redis-cli --cluster create."""

    def __init__(
        self,
        ports: Sequence[int] | None = None,
        *,
        node_timeout_ms: int = 2000,
        extra_args: Sequence[str] = (),
        workdir: Path | str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        chosen = list(ports) if ports is not None else free_ports(3, cluster_bus=True)
        if len(chosen) != 3:
            raise ValueError("RedisCluster3 needs exactly three ports")
        self.startup_timeout = startup_timeout
        base = Path(workdir) if workdir is not None else None
        self.nodes = [
            RedisServer(
                port,
                [
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", str(node_timeout_ms),
                    *extra_args,
                ],
                workdir=base / f"node-{port}" if base is not None else None,
                startup_timeout=startup_timeout,
            )
            for port in chosen
        ]  # fmt: skip

    @property
    def ports(self) -> list[int]:
        """Return the client ports of the three nodes."""
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """Return the redis+cluster:// URL VORA accepts for this cluster."""
        return "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    def client(self, **kwargs: Any) -> RedisCluster:
        """Return a plain redis-py cluster client (the caller closes it)."""
        options: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, "decode_responses": True}
        options.update(kwargs)
        return RedisCluster(startup_nodes=[ClusterNode(n.host, n.port) for n in self.nodes], **options)

    def _state_ok(self, node: RedisServer) -> bool:
        info = _info_fields(node.execute("CLUSTER", "INFO", timeout=1.0))
        return info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == str(len(self.nodes))

    def wait_ok(self, timeout: float | None = None) -> None:
        """Return once every running node says cluster_state:ok and knows all nodes."""
        wait_for(
            lambda: all(self._state_ok(n) for n in self.nodes if n.running),
            timeout if timeout is not None else self.startup_timeout,
            what="cluster_state:ok on every node",
        )

    def start(self) -> Self:
        """Start the three nodes, join them into a cluster and wait until it is ok everywhere."""
        try:
            for node in self.nodes:
                node.start()
            create = [
                _binary(REDIS_CLI),
                "--cluster", "create",
                *(f"{n.host}:{n.port}" for n in self.nodes),
                "--cluster-replicas", "0",
                "--cluster-yes",
            ]  # fmt: skip
            result = subprocess.run(
                create,
                capture_output=True,
                text=True,
                timeout=self.startup_timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            if result.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}")
            self.wait_ok()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every node and remove the directories the harness made."""
        for node in self.nodes:
            node.close()


class RedisSentinelSet(Harnessed):
    """One master, one replica and three sentinels (quorum 2) that monitor the master as one service."""

    def __init__(
        self,
        service: str = "vora",
        *,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        workdir: Path | str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.service = service
        self.startup_timeout = startup_timeout
        base = Path(workdir) if workdir is not None else None

        def subdir(name: str) -> Path | None:
            return base / name if base is not None else None

        master_port, replica_port, *sentinel_ports = free_ports(5)
        # Without a diskless-sync delay the replica syncs at once instead of after the default 5 s.
        no_delay = ["--repl-diskless-sync-delay", "0"]
        self.master = RedisServer(master_port, no_delay, workdir=subdir("master"), startup_timeout=startup_timeout)
        self.replica = RedisServer(
            replica_port,
            [*no_delay, "--replicaof", HOST, str(master_port)],
            workdir=subdir("replica"),
            startup_timeout=startup_timeout,
        )
        self.sentinels = [
            RedisSentinel(
                master_port,
                port,
                service=service,
                quorum=quorum,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
                workdir=subdir(f"sentinel-{port}"),
                startup_timeout=startup_timeout,
            )
            for port in sentinel_ports
        ]
        self.old_master: RedisServer | None = None

    @property
    def servers(self) -> list[RedisServer]:
        """Return the two data servers, whatever their current roles."""
        return [self.master, self.replica]

    @property
    def url(self) -> str:
        """Return the redis+sentinel:// URL VORA accepts for this set (database 0)."""
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def _replica_in_sync(self) -> bool:
        info = self.replica.info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _sentinel_ready(self, sentinel: RedisSentinel) -> bool:
        if sentinel.master_address() != self.master.address:
            return False
        state = sentinel.master_state()
        if int(state.get("num-other-sentinels", 0)) < len(self.sentinels) - 1:
            return False  # a failover needs a majority of sentinels that know each other
        flags = str(state.get("flags", ""))
        if "down" in flags or "disconnected" in flags:
            return False
        return any(
            int(r.get("port", 0)) == self.replica.port
            and not {"s_down", "o_down", "disconnected"} & set(str(r.get("flags", "")).split(","))
            and r.get("master-link-status", "ok") == "ok"
            for r in sentinel.replicas()
        )

    def start(self) -> Self:
        """Start master, replica (waiting for sync) and then sentinels, and wait until all agree."""
        try:
            self.master.start()
            self.replica.start()
            wait_for(self._replica_in_sync, self.startup_timeout, what="the replica to sync with the master")
            for sentinel in self.sentinels:
                sentinel.start()
            wait_for(
                lambda: all(self._sentinel_ready(s) for s in self.sentinels),
                self.startup_timeout,
                what="every sentinel to know the master, the replica and the other sentinels",
            )
        except BaseException:
            self.close()
            raise
        return self

    def master_addresses(self) -> list[tuple[str, int] | None]:
        """Return the master address each sentinel reports (None where it does not answer)."""
        addresses: list[tuple[str, int] | None] = []
        for sentinel in self.sentinels:
            try:
                addresses.append(sentinel.master_address())
            except (OSError, redis.RedisError):
                addresses.append(None)
        return addresses

    def kill_master(self) -> tuple[str, int]:
        """SIGKILL the current master and return its address."""
        victim = self.master
        victim.kill()
        self.old_master = victim
        return victim.address

    def wait_for_failover(self, timeout: float = 30.0) -> tuple[str, int]:
        """Wait until every sentinel reports the same new master, which answers as a master, and return it."""
        old = self.old_master.address if self.old_master is not None else self.master.address

        def promoted() -> tuple[str, int] | None:
            addresses = set(self.master_addresses())
            if len(addresses) != 1:
                return None
            (address,) = addresses
            if address is None or address == old:
                return None
            server = next((s for s in self.servers if s.address == address), None)
            if server is None or server.info("replication").get("role") != "master":
                return None
            return address

        address = wait_for(promoted, timeout, what=f"the sentinels to promote a new master for {self.service}")
        new_master = next(s for s in self.servers if s.address == address)
        others = [s for s in self.servers if s is not new_master]
        self.master = new_master
        self.replica = others[0] if others else new_master
        return address

    def close(self) -> None:
        """Stop sentinels, then the replica, then the master, and remove the directories the harness made."""
        for sentinel in self.sentinels:
            sentinel.close()
        # Replica first: a master stopped with a replica attached waits for it to catch up (shutdown-timeout).
        for server in (self.replica, self.old_master, self.master):
            if server is not None:
                server.close()
