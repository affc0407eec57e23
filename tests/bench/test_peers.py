"""The benchmark's Node peers start, accept a client of their own protocol and relay a published event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.peers.node import PEERS, PEERS_DIR, NodeLoad, NodePublisher, Peer, peer_url, start_peer
from bench.procs import Launcher
from tests.harness.redis_procs import RedisServer

IDENTITY = "910111000"


def test_lock_pins_every_package_without_registry_addresses() -> None:
    """The peers' lock file pins each package by version and integrity and names no registry."""
    lock = json.loads((PEERS_DIR / "package-lock.json").read_text())
    declared = json.loads((PEERS_DIR / "package.json").read_text())["dependencies"]
    packages = {path: entry for path, entry in lock["packages"].items() if path}
    assert lock["packages"][""]["dependencies"] == declared
    assert all(version[0].isdigit() for version in declared.values())
    assert all("resolved" not in entry and entry.get("integrity") for entry in packages.values())


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """Run a redis-server of the module's own on a free loopback port."""
    with RedisServer() as server:
        yield server


@pytest.mark.slow
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
