"""Fixtures that start real Redis topologies and nginx for the topology tests, and always stop them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Nginx, RedisCluster3, RedisSentinelSet, nginx_or_skip
from tests.harness.journey import Entry, vora_env
from tests.harness.topology import EnvFactory, Sockets
from tests.harness.upstreams import Upstream
from tests.harness.ws_client import Client, open_client


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster3]:
    """Yield a running three-master Redis Cluster shared by one test module."""
    with RedisCluster3() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[RedisSentinelSet]:
    """Yield a master, replica and three sentinels shared by one test module (do not fail it over)."""
    with RedisSentinelSet() as sentinels:
        yield sentinels


@pytest.fixture
def fresh_sentinel_set() -> Iterator[RedisSentinelSet]:
    """Yield a master, replica and three sentinels of its own, for a test that fails the master over."""
    with RedisSentinelSet() as sentinels:
        yield sentinels


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """Return the nginx binary, installing it when root, or skip when it cannot be had."""
    return nginx_or_skip()


@pytest.fixture
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    """Yield two in-process HTTP upstreams named a and b."""
    with Upstream("a") as first, Upstream("b") as second:
        yield first, second


@pytest.fixture
def nginx(nginx_binary: str, upstreams: tuple[Upstream, Upstream]) -> Iterator[Nginx]:
    """Yield nginx balancing over the two upstreams."""
    with Nginx([u.port for u in upstreams], binary=nginx_binary) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def make_env(key_dir: Path, dev_key_pem: bytes) -> EnvFactory:
    """Return the VORA_* variables of a server on a Redis URL, trusting the dev key that make_token signs with."""

    def make(redis_url: str, **overrides: str) -> dict[str, str]:
        return vora_env(redis_url, key_dir, **overrides)

    return make


@pytest.fixture
def sockets() -> Iterator[Sockets]:
    """Open real WebSocket clients at an entry point and close every one of them after the test."""
    opened: list[Client] = []

    def open_socket(entry: Entry, token: str, last_event_id: str | None = None) -> Client:
        client = open_client(entry.ws_url, token, last_event_id)
        opened.append(client)
        return client

    yield open_socket
    for client in opened:
        client.close()
