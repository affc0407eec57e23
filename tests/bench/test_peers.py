"""The benchmark's Node peers start, accept a client of their own protocol and relay a published event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.peers.node import PEERS, NodeLoad, NodePublisher, Peer, peer_url, start_peer
from bench.procs import Launcher
from tests.harness.redis_procs import RedisServer

pytestmark = pytest.mark.slow

IDENTITY = "910111000"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """Run a redis-server of the module's own on a free loopback port."""
    with RedisServer() as server:
        yield server


@pytest.mark.parametrize("peer", PEERS, ids=[p.kind for p in PEERS])
def test_peer_relays_an_event(peer: Peer, redis_server: RedisServer, tmp_path: Path) -> None:
    """A peer with two workers delivers one event, then a short flat-out phase, to two clients in order."""
    launcher = Launcher(tmp_path)
    server = start_peer(launcher, peer, redis_server.url, workers=2, prefix=f"test:{peer.kind}")
    client = publisher = None
    try:
        client = NodeLoad(launcher, "load", peer.protocol)
        publisher = NodePublisher(launcher, "publisher", peer, redis_server.url, f"test:{peer.kind}")
        opened = client.call({"cmd": "open", "urls": [peer_url(server, peer, IDENTITY)] * 2}, timeout=30)
        assert (opened["held"], opened["failed"]) == (2, {})

        first = publisher(IDENTITY, "presence", {"status": "busy", "note": "t0"})
        primed = client.call({"cmd": "wait_primed", "first": {IDENTITY: first}, "timeout": 10}, timeout=20)
        assert (first, primed["unprimed"], primed["wrong_start"]) == (1, 0, 0)

        client.call({"cmd": "reset"}, timeout=10)
        published = publisher.send(None, [IDENTITY], 5, None)
        report = client.call({"cmd": "expect", "final": published["final"], "timeout": 10}, timeout=20)
        assert published["final"] == {IDENTITY: 6}
        assert (report["deliveries"], report["gaps"], report["duplicates"], report["missing_at_end"]) == (10, 0, 0, 0)
        assert report["latency_samples"] == 10
        assert server.rss() > 0
    finally:
        if publisher is not None:
            publisher.stop()
        if client is not None:
            client.stop()
        server.process.stop(5.0)
