"""Tests of the Redis client factory."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from testbed.wait import wait_for
from tests.harness import RedisServer
from vora.store.client import connect, parse_redis_url


def test_pool_size_bounds_connections(redisdb: redis.Redis, redis_url: str) -> None:
    """With a pool size, concurrent callers share that many connections instead of opening one each."""
    client = connect(redis_url, timeout=5, pool_size=2)
    before = len(redisdb.client_list())  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any
    barrier = threading.Barrier(8)

    def block_briefly() -> None:
        barrier.wait()
        client.blpop(["vora:test:never"], timeout=0.2)

    threads = [threading.Thread(target=block_briefly) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(redisdb.client_list()) - before <= 2  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any


def test_a_caller_waits_for_a_pool_connection_only_up_to_the_pool_timeout(redisdb: redis.Redis, redis_url: str) -> None:
    """With every pool connection busy, a caller fails after pool_timeout, well before the command timeout."""
    client = connect(redis_url, timeout=10, pool_size=1, pool_timeout=0.2)
    holder = threading.Thread(target=lambda: client.blpop(["vora:test:never"], timeout=3))
    holder.start()
    try:

        def blocked() -> bool:
            return bool(redisdb.info("clients")["blocked_clients"] == 1)  # type: ignore[index] # redis-py types sync replies as Awaitable | Any

        wait_for(blocked, 5, what="the pool's one connection to block")
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError, match="No connection available"):
            client.ping()
        assert time.monotonic() - started < 2.0
    finally:
        holder.join()


@pytest.mark.parametrize(
    ("url", "kind", "hosts", "service", "db"),
    [
        ("redis://127.0.0.1:6379/0", "single", (), "", 0),
        (
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/vora/2",
            "sentinel",
            (("127.0.0.1", 26379), ("127.0.0.1", 26380)),
            "vora",
            2,
        ),
        ("redis+cluster://127.0.0.1:7000,[::1]:7001", "cluster", (("127.0.0.1", 7000), ("::1", 7001)), "", 0),
    ],
)
def test_parses_every_url_form(url: str, kind: str, hosts: tuple[tuple[str, int], ...], service: str, db: int) -> None:
    """Standalone, Sentinel and Cluster URLs parse into their parts."""
    target = parse_redis_url(url)
    assert (target.kind, target.hosts, target.service, target.db) == (kind, hosts, service, db)


@pytest.mark.parametrize("url", ["redis+sentinel://127.0.0.1:26379", "redis+cluster://nohostport", "memcached://x:1"])
def test_refuses_malformed_urls(url: str) -> None:
    """A Sentinel URL without a service, a host without a port, or another scheme is refused."""
    with pytest.raises(ValueError, match=r"\S"):
        parse_redis_url(url)


@pytest.fixture
def hung_redis() -> Iterator[RedisServer]:
    """Yield a real redis-server that is stopped with SIGSTOP (it accepts connections, answers nothing)."""
    with RedisServer() as server:
        assert server.pid is not None
        yield server
        os.kill(server.pid, signal.SIGCONT)


@pytest.mark.parametrize("pool_size", [None, 4])
def test_a_hung_redis_fails_a_command_after_one_timeout(hung_redis: RedisServer, pool_size: int | None) -> None:
    """A command to a SIGSTOPped Redis gives up after VORA_REDIS_TIMEOUT, without retrying the timeout."""
    timeout = 1.0
    client = connect(hung_redis.url, timeout, pool_size)
    client.ping()  # the connection is open before Redis stops answering
    assert hung_redis.pid is not None
    os.kill(hung_redis.pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        client.get("vora:test:key")
    # One timeout, not three (two retries): well under twice the setting even on a busy machine.
    assert time.monotonic() - started < timeout * 2


def test_a_refused_connection_is_retried(redis_url: str) -> None:
    """A connection that is dropped under a client is reopened by a retry, so the command still succeeds."""
    client = connect(redis_url, timeout=2)
    client.set("vora:test:key", "1")
    client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no")
    assert client.get("vora:test:key") == b"1"
