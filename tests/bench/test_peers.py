"""The benchmark's Node peers relay published events, and the peers group runs every phase to a complete table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from bench.context import Bench
from bench.peers.node import PEERS, PEERS_DIR, NodeLoad, NodePublisher, Peer, peer_url, start_peer
from bench.procs import Launcher
from bench.report import write_results
from bench.scenarios import peers
from testbed.redis_procs import RedisServer

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


@pytest.mark.slow
def test_every_phase_of_the_peers_group_fills_every_row(bench: Bench) -> None:
    """At its smallest sizes the group runs every phase on each server, loses nothing and fills each row from JSON."""
    figures = peers.run(bench, peers.SMOKE)
    warmup_deliveries = int(figures["rate"] * figures["warmup_seconds"]) * figures["fan_out"]
    for server in ("vora", *(peer.kind for peer in PEERS)):
        memory, delivery = figures[server]["memory"], figures[server]["delivery"]
        assert (memory["held"], memory["failed"]) == (peers.SMOKE.memory_sockets, {}), (server, memory)
        assert (delivery["unprimed"], delivery["wrong_start"]) == (0, 0), (server, delivery)
        for name in ("warmup", "paced", "burst"):
            phase = delivery[name]
            assert (phase["lost"], phase["duplicates"]) == (0, 0), (server, name, phase)
            # The warm-up keeps only its counts and latencies, not what it expected.
            assert phase["deliveries"] == phase.get("expected_deliveries", warmup_deliveries), (server, name, phase)

    # The table rebuilt from the JSON the run writes equals the run's: every field the rows read is in it.
    path = bench.workdir / "peers.json"
    write_results(path, {}, {"peers": figures}, peers.rows(figures), {})
    document = json.loads(path.read_text())
    rows = peers.rows(document["scenarios"]["peers"])
    assert [asdict(row) for row in rows] == document["table"]
    assert len(rows) == 8 * len(PEERS)  # seven figures and the losses, each beside every peer
    incomplete = [row for row in rows if not (_number(row.measured) and _number(row.baseline))]
    assert not incomplete, incomplete
    losses = [row for row in rows if row.scenario.startswith("P events lost")]
    assert [(row.measured, row.baseline, row.met) for row in losses] == [(0.0, 0.0, True)] * len(PEERS)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
