"""Connect to Redis from a VORA_REDIS_URL: standalone, TLS, unix socket, Sentinel or Cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterError, OutOfMemoryError, ReadOnlyError, RedisClusterException, TryAgainError
from redis.retry import Retry
from redis.sentinel import Sentinel

# Everything redis-py raises when a command fails: its cluster client's RedisClusterException
# (no reachable node, slot not covered) is not a RedisError.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)

# What a read or write may raise when Redis fails under it. ValueError comes from redis-py when
# another greenlet closed the connection under a blocked read, as the cluster client does to every
# connection of a node (those of other greenlets included) each time it reloads the cluster's layout.
REDIS_TROUBLE: tuple[type[Exception], ...] = (*REDIS_ERRORS, OSError, ValueError)

# What says the store cannot serve now, on any topology: a connection lost, refused or timed out
# (Sentinel's MasterNotFoundError and a loading server's BusyLoadingError included), a cluster
# that is down, unreachable or moving slots, a master that Sentinel has just demoted.
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterError,
    TryAgainError,
    ReadOnlyError,
    RedisClusterException,
)


# Error replies with which Redis refuses a command for now, not for good: the command ran nothing (in a
# script, Redis checks these at its first write, so a script they stop has written nothing) and the
# same command succeeds once the condition passes: a full Redis (maxmemory with noeviction), one
# busy running a script past its time limit, one whose last snapshot failed (stop-writes-on-bgsave-
# error), one short of min-replicas-to-write. redis-py raises a plain ResponseError for all but OOM.
REFUSALS_FOR_NOW = ("OOM", "BUSY", "MISCONF", "NOREPLICAS")
# On Cluster, a script that reaches a key of its slot that a migration (resharding) already moved to
# another node, or runs while the cluster is down, is stopped with a plain ERR reply: "MOVING" and
# "CLUSTERDOWN" here. Once the slot settles the same call runs. Unlike the refusals above, such a
# script may have written part of its work (Redis rolls nothing back): only the session scripts name
# keys from their arguments (session hashes, token keys), and a retry completes what they began; the
# publish scripts touch only the keys they declare, which Redis checks before running them.
_SCRIPT_STOPPED_BY_CLUSTER = {
    "Script attempted to access a non local key in a cluster node script": "MOVING",
    "Script attempted to execute a command while the cluster is down": "CLUSTERDOWN",
    "Script attempted to execute a write command while the cluster is down": "CLUSTERDOWN",
}


# What each refusal means for a caller, and how many seconds a retry is worth waiting: a full Redis or a
# failed snapshot needs an operator (or keys to expire), a busy script or a replica reconnecting passes soon.
REFUSAL_WORDS: dict[str, tuple[str, int]] = {
    "OOM": ("Redis is full: its used memory is over maxmemory and it evicts nothing, so it takes no writes", 10),
    "BUSY": ("Redis is busy running a script past its time limit", 1),
    "MISCONF": ("Redis refuses writes because its last snapshot to disk failed", 10),
    "NOREPLICAS": ("Redis refuses writes because fewer replicas than min-replicas-to-write are connected", 1),
    "MOVING": ("Redis Cluster is moving this identity's keys to another node (a slot migration)", 1),
    "CLUSTERDOWN": ("Redis Cluster is down", 1),
}


def refusal_for_now(exc: BaseException) -> str | None:
    """Name the condition (a key of REFUSAL_WORDS) for which Redis refused a command for now, or None."""
    if isinstance(exc, OutOfMemoryError):
        return "OOM"  # redis-py strips the code from the message of the error classes it knows
    if isinstance(exc, redis.ResponseError) and not isinstance(exc, UNAVAILABLE):
        message = str(exc)
        code = message.split(" ", 1)[0]
        if code in REFUSALS_FOR_NOW:
            return code
        for prefix, condition in _SCRIPT_STOPPED_BY_CLUSTER.items():
            if message.startswith(prefix):
                return condition
    return None


def is_unavailable(exc: BaseException) -> bool:
    """Tell whether a failed command says the store cannot serve now (unreachable, moving, refusing for now)."""
    return isinstance(exc, UNAVAILABLE) or refusal_for_now(exc) is not None


class Sends:
    """What the commands of a tracked block did: whether any byte of one may have reached Redis."""

    def __init__(self) -> None:
        self.sent = False


_tracked_sends: ContextVar[Sends | None] = ContextVar("vora_tracked_sends", default=None)


@contextlib.contextmanager
def tracked_sends() -> Iterator[Sends]:
    """Note whether a command of this block (this greenlet's) began to go out to Redis, however it ended."""
    sends = Sends()
    token = _tracked_sends.set(sends)
    try:
        yield sends
    finally:
        _tracked_sends.reset(token)


def note_sent() -> None:
    """Tell the tracked block (if any) that a command of it may have reached Redis, sent on its behalf."""
    sends = _tracked_sends.get()
    if sends is not None:
        sends.sent = True


def _tracking(connection_class: type[Any]) -> type[Any]:
    """Derive a redis-py connection class that tells the tracked block when a command starts to go out.

    Only the caller's commands count: the connection's own handshake (AUTH, HELLO, SELECT) and its
    health-check PING are not the command, and a failure there means the command was never sent.
    """

    class SendTracking(connection_class):  # type: ignore[misc] # a redis-py connection class, chosen at run time
        _vora_own_traffic = False

        def connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
            self._vora_own_traffic = True
            try:
                return super().connect_check_health(*args, **kwargs)
            finally:
                self._vora_own_traffic = False

        def check_health(self) -> Any:
            self._vora_own_traffic = True
            try:
                return super().check_health()
            finally:
                self._vora_own_traffic = False

        def send_packed_command(self, command: Any, check_health: bool = True) -> Any:
            sends = _tracked_sends.get()
            if sends is None or self._vora_own_traffic:
                return super().send_packed_command(command, check_health)
            # What the base class does first, so that a failure to connect or a failed health check
            # (nothing of the command sent) is told apart from a failure once its bytes go out.
            if not self._sock:
                self.connect_check_health(check_health=False)
            if check_health:
                self.check_health()
            sends.sent = True
            return super().send_packed_command(command, check_health=False)

    SendTracking.__name__ = f"SendTracking{connection_class.__name__}"
    return SendTracking


def _track_sends(client: redis.Redis) -> redis.Redis:
    """Make a standalone or Sentinel client's connections report to tracked_sends."""
    pool = client.connection_pool
    pool.connection_class = _tracking(pool.connection_class)
    return client


def tracks_sends(client: redis.Redis) -> bool:
    """Tell whether a client's commands report to tracked_sends (not on Cluster, whose nodes make their own)."""
    pool = getattr(client, "connection_pool", None)
    return pool is not None and pool.connection_class.__name__.startswith("SendTracking")


class NotWritten(redis.ConnectionError):
    """A write failed before any byte of it reached Redis (refused, no connection free), or Redis refused it."""


class WriteOutcomeUnknown(redis.TimeoutError):
    """A write failed once sent, before Redis answered (a timeout, a dropped connection): it may have been applied."""


def unavailable_write(exc: Exception, sends: Sends, tracked: bool) -> Exception:
    """Classify a failed write by whether it may have been applied; an untracked client cannot tell, so: unknown."""
    refused = isinstance(exc, redis.ResponseError)  # Redis answered (READONLY, TRYAGAIN): it ran nothing
    kind = NotWritten if refused or (tracked and not sends.sent) else WriteOutcomeUnknown
    classified = kind(f"{type(exc).__name__}: {exc}")
    classified.__cause__ = exc
    return classified


def is_permanent(exc: BaseException) -> bool:
    """Tell whether Redis refused a command for good (a retry gets the same answer), not failed for now."""
    return isinstance(exc, redis.ResponseError) and not is_unavailable(exc)


@dataclass(frozen=True)
class RedisTarget:
    """A parsed VORA_REDIS_URL."""

    kind: str  # "single", "sentinel" or "cluster"
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    password: str | None = None
    username: str | None = None
    tls: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """Parse the URL forms VORA accepts, raising ValueError on a bad one."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisTarget("single", url)
    scheme, _, rest = url.partition("://")
    tls = scheme.endswith("s")
    if scheme not in {"redis+sentinel", "redis+sentinels", "redis+cluster", "redis+clusters"}:
        raise ValueError(f"unsupported Redis URL scheme {scheme!r}")
    parts = urlsplit(f"redis://{rest}")
    credentials, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    hosts = []
    for item in hostlist.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"each Redis host needs host:port, got {item!r}")
        hosts.append((host.strip("[]"), int(port)))
    segments = [s for s in parts.path.split("/") if s]
    kind = "sentinel" if scheme.startswith("redis+sentinel") else "cluster"
    service = ""
    db = 0
    if kind == "sentinel":
        if not segments:
            raise ValueError("a Sentinel URL needs the service name: redis+sentinel://h:p,h:p/SERVICE[/DB]")
        service = segments[0]
        db = int(segments[1]) if len(segments) > 1 else 0
    query = parse_qs(parts.query)
    if "password" in query:
        password = query["password"][0]
    return RedisTarget(
        kind,
        url,
        tuple(hosts),
        service,
        db,
        unquote(password) if password else None,
        unquote(username) if username else None,
        tls,
    )


def connect(
    url: str, timeout: float, pool_size: int | None = None, pool_timeout: float | None = None, **extra: Any
) -> redis.Redis:
    """Return a client for the URL; nothing is sent until the first command.

    With pool_size, a standalone client keeps at most that many connections and makes
    further callers wait (up to pool_timeout, at most timeout) for one, so a burst of sockets
    resuming at once cannot open a connection each.
    """
    target = parse_redis_url(url)
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        # A refused or dropped connection is retried at once; a timeout is not, so that a Redis that
        # does not answer fails a command after `timeout` and not after a multiple of it.
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2, supported_errors=(redis.ConnectionError,)),
        "retry_on_error": [redis.ConnectionError],
        **extra,
    }
    if target.kind == "single":
        if pool_size is None:
            return _track_sends(redis.Redis.from_url(url, **common))
        # A caller that cannot get a connection soon is better refused (503, retry) than held:
        # waiting longer only lets the queue of callers behind it grow.
        wait = timeout if pool_timeout is None else min(timeout, pool_timeout)
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=wait, **common)
        return _track_sends(redis.Redis(connection_pool=pool))
    auth = {"password": target.password, "username": target.username}
    if target.kind == "sentinel":
        sentinel = Sentinel(  # type: ignore[no-untyped-call] # the library leaves it unannotated
            list(target.hosts),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        )
        master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call] # the library leaves it unannotated
            target.service, db=target.db, ssl=target.tls, **auth, **common
        )
        return _track_sends(master)
    cluster_options: dict[str, Any] = {
        k: v for k, v in common.items() if k not in {"retry_on_error", "health_check_interval"}
    }
    cluster_options.update(auth)
    nodes = [ClusterNode(h, p) for h, p in target.hosts]  # type: ignore[no-untyped-call] # the library leaves it unannotated
    return cast(redis.Redis, RedisCluster(startup_nodes=nodes, ssl=target.tls, **cluster_options))


def is_cluster(client: redis.Redis) -> bool:
    """Tell whether a client speaks to a Redis Cluster, where one command or script stays within one slot."""
    return isinstance(client, RedisCluster)


def readiness_problem(probe: redis.Redis) -> str | None:
    """Return None when Redis answers PING within the probe's timeout, else why not."""
    try:
        probe.ping()
        if isinstance(probe, RedisCluster):
            # A PING reaches one node; the cluster may still have uncovered slots.
            state = probe.cluster_info().get("cluster_state")
            if state != "ok":
                return f"Redis Cluster state is {state}"
    except REDIS_ERRORS as exc:
        refusal = refusal_for_now(exc)
        if refusal is not None:
            return f"Redis refuses commands for now: {refusal} ({REFUSAL_WORDS[refusal][0]})"
        return f"Redis does not answer: {type(exc).__name__}"
    return None
