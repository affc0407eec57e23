"""Peers (`--only peers`): VORA beside Socket.IO 4 on Node with Redis and a plain Node ws relay, in one run.

Every server gets the load shapes of scenarios 3, 4 and 7 on fresh processes, 2 workers each,
on the benchmark's own Redis, driven by one Node load generator (bench/peers/load.js: `ws` for
VORA and the relay, socket.io-client for Socket.IO), so that the ratios differ only by server:

- memory: 10,000 idle connections over 100 identities, OPEN_CONCURRENCY
  handshakes at a time, after a warm-up round of 20; (RSS - idle RSS) / connections, the RSS
  summed over the master (Node: the cluster primary) and its workers, as scenario 3 measures it;
- delivery: 50 identities x 20 sockets (fan-out 20), a primer per identity, then 5 s
  at 1,000 events/s (discarded: a JIT's first seconds), 20 s at 1,000 events/s (server
  CPU per 100,000 deliveries as scenario 7, p50/p99 of publish-to-receive), then a burst of
  10,000 events published as fast as the publisher goes (deliveries/s as scenario 4).

Those are the FULL sizes; `--quick` runs QUICK, and tests/bench/test_peers.py every phase at SMOKE's.

Both sides publish as fast as their stack's own publisher goes: VORA through its store's
pipelined append (the server API's batch path), each event checked against the catalogue
before the clock starts, all events due leaving in one round trip (vora_sender); the peers
from a Node process (bench/peers/publish.js) through their own Redis adapter or emitter,
whose client pipelines the same way. The primers go one at a time (VORA: EventPublisher).
The figure of each row is VORA's and the "baseline" the peer's: the ratio is VORA/peer.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.context import DEFAULTS, WORKERS, Bench, identities
from bench.peers.node import PEERS, NodeLoad, NodePublisher, Peer, peer_url, start_peer
from bench.procs import Server
from bench.report import Row
from bench.scenarios.fanout import (
    FAN_OUT,
    RATE,
    SESSIONS,
    SOCKETS,
    TYPES,
    Publisher,
    Schedule,
    Sender,
    event_data,
    open_primed,
    phase,
    vora_publisher,
)
from bench.wsclient import WsLoad, stamp
from vora.store.streams import StreamStore

USER = "bench-peers"
OPEN_CONCURRENCY = 200
BURST_BATCH = 200
PER = 100_000  # deliveries the CPU figures are normalised to
STAMP_PLACEHOLDER = "t-stamped-when-sent"
TARGET_PEER = "socketio-streams"  # the target: VORA at or better than Socket.IO + Redis
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Sizes:
    """How many connections each phase holds and how long it publishes."""

    memory_sockets: int
    memory_sessions: int
    delivery_identities: int  # each with FAN_OUT sockets
    settle_seconds: float  # before each memory reading, for the servers' allocations to settle
    warmup_seconds: float
    paced_seconds: float
    burst_events: int


FULL = Sizes(10_000, 100, 50, 2.0, 5, 20, 10_000)
QUICK = Sizes(1000, 100, 50, 2.0, 2, 4, 2000)  # `--quick`: a smoke test, not figures
# The smallest run in which every phase still yields each figure the rows read: a test of the
# group's plumbing end to end (tests/bench/test_peers.py), its figures meaningless.
SMOKE = Sizes(20, 2, 2, 0.2, 0.25, 0.5, 200)


def sizes_of(bench: Bench) -> Sizes:
    """Return the sizes of the benchmark's mode."""
    return QUICK if bench.quick else FULL


def _idle_rss(server: Server) -> int:
    samples = []
    for _ in range(3):
        samples.append(server.rss())
        time.sleep(0.2)
    return int(sum(samples) / len(samples))


def _hold(server: Server, client: WsLoad, urls: list[str], sizes: Sizes) -> dict[str, Any]:
    """Hold idle connections; return the server's memory per connection as scenario 3 measures it."""
    client.call({"cmd": "open", "urls": urls[:20], "concurrency": 20}, timeout=60)
    client.call({"cmd": "close"}, timeout=60)
    time.sleep(sizes.settle_seconds)
    idle = _idle_rss(server)
    reply = client.call({"cmd": "open", "urls": urls, "concurrency": OPEN_CONCURRENCY}, timeout=180)
    time.sleep(sizes.settle_seconds)
    status = client.call({"cmd": "status"}, timeout=30)
    rss = server.rss()
    held = status["held"]
    figures = {
        "target": len(urls),
        "held": held,
        "failed": reply["failed"],
        "accept_seconds": reply["seconds"],
        "idle_rss_mib": round(idle / 2**20, 1),
        "rss_mib": round(rss / 2**20, 1),
        "rss_per_process_mib": [round(p.memory_info().rss / 2**20, 1) for p in server.processes()],
        "kb_per_connection": round((rss - idle) / held / 1024, 2) if held else None,
        "client_rss_mib": status.get("rss_mib"),
    }
    client.call({"cmd": "close"}, timeout=120)
    return figures


def _deliver(
    bench: Bench,
    server: Server,
    client: WsLoad,
    urls: list[str],
    ids: list[str],
    publish: Publisher,
    sends: tuple[Sender, Sender],
    label: str,
    sizes: Sizes,
) -> dict[str, Any]:
    """Warm up, then a paced phase (CPU, latency) and a burst (capacity) on primed sockets."""
    paced_send, burst_send = sends
    held = open_primed(client, urls, ids, publish)
    warm = int(RATE * sizes.warmup_seconds)
    warmup = phase(bench, client, server, publish, ids, warm, RATE, f"peers-{label}-warmup", paced_send)
    redis_before = bench.redis_cpu_seconds()
    count = int(RATE * sizes.paced_seconds)
    paced = phase(bench, client, server, publish, ids, count, RATE, f"peers-{label}-paced", paced_send)
    redis_cpu = bench.redis_cpu_seconds() - redis_before
    burst_count = sizes.burst_events
    burst = phase(bench, client, server, publish, ids, burst_count, None, f"peers-{label}-burst", burst_send)
    client.call({"cmd": "close"}, timeout=120)
    deliveries = paced["deliveries"]
    return {
        **held,
        "warmup": {key: warmup[key] for key in ("deliveries", "lost", "duplicates", "latency_ms")},
        "paced": paced,
        "burst": burst,
        "server_cpu_seconds_per_100k": round(paced["server_cpu_seconds"] * PER / deliveries, 3) if deliveries else None,
        "redis_cpu_seconds_per_100k": round(redis_cpu * PER / deliveries, 3) if deliveries else None,
    }


def vora_sender(bench: Bench) -> Sender:
    """Publish through VORA's store, every event checked first; all events due leave in one round trip.

    As a Node client pipelines the commands issued in one turn of its loop, so that a publisher
    that falls behind its schedule on a busy machine catches up instead of lowering the rate:
    each round trip carries every event whose slot has come (at most BURST_BATCH; flat out,
    BURST_BATCH at a time). Each event is checked against the catalogue before the clock starts,
    and stamped with the monotonic clock as its round trip leaves.
    """
    streams = StreamStore(bench.redis, max_length=DEFAULTS.stream_max_length, max_age_seconds=DEFAULTS.stream_max_age)

    def send(publish: Publisher, ids: list[str], count: int, rate: float | None) -> dict[str, Any]:
        events = []
        for n in range(count):
            event_type = TYPES[n % len(TYPES)]
            data = event_data(event_type, n)
            data["note" if "note" in data else "reason"] = STAMP_PLACEHOLDER
            events.append(bench.publisher.checked(ids[n % len(ids)], event_type, data))
        schedule = Schedule(rate)
        final: dict[str, int] = {}
        sent = 0
        while sent < count:
            schedule.wait_for(sent)
            due = count if rate is None else int((time.monotonic() - schedule.started) * rate) + 1
            end = min(count, max(due, sent + 1), sent + BURST_BATCH)
            batch = [
                dataclasses.replace(event, data_json=event.data_json.replace(STAMP_PLACEHOLDER, stamp()))
                for event in events[sent:end]
            ]
            for event, result in zip(batch, streams.append_many(batch, 0), strict=True):
                if isinstance(result, Exception):
                    raise result
                final[event.identity] = result.sequence_number
            sent = end
        return schedule.report(count, final)

    return send


def _vora(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    memory_ids = identities("7700", sizes.memory_sessions)
    delivery_ids = identities("7710", sizes.delivery_identities)
    sockets = sizes.memory_sockets
    with bench.vora_server() as vora:
        tokens = bench.open_sessions(vora, f"{USER}-memory", memory_ids, per_identity=1)
        urls = [f"{vora.ws_url}?token={tokens[n % len(tokens)]}" for n in range(sockets)]
        client = NodeLoad(bench.procs, "peers-load-memory-vora", "ws")
        try:
            memory = _hold(vora, client, urls, sizes)
        finally:
            client.stop()
    with bench.vora_server() as vora:
        tokens = bench.open_sessions(vora, f"{USER}-delivery", delivery_ids, per_identity=SESSIONS)
        urls = [f"{vora.ws_url}?token={token}" for token in tokens for _ in range(SOCKETS)]
        client = NodeLoad(bench.procs, "peers-load-delivery-vora", "ws")
        try:
            send = vora_sender(bench)
            publish = vora_publisher(bench.publisher)
            delivery = _deliver(bench, vora, client, urls, delivery_ids, publish, (send, send), "vora", sizes)
        finally:
            client.stop()
    return {"memory": memory, "delivery": delivery}


def _peer(bench: Bench, peer: Peer, sizes: Sizes) -> dict[str, Any]:
    memory_ids = identities("7700", sizes.memory_sessions)
    delivery_ids = identities("7710", sizes.delivery_identities)
    sockets = sizes.memory_sockets
    redis_url = bench.redis_server.url
    server = start_peer(bench.procs, peer, redis_url, WORKERS, f"bench:peers:{peer.kind}:memory")
    try:
        urls = [peer_url(server, peer, memory_ids[n % len(memory_ids)]) for n in range(sockets)]
        client = NodeLoad(bench.procs, f"peers-load-memory-{peer.kind}", peer.protocol)
        try:
            memory = _hold(server, client, urls, sizes)
        finally:
            client.stop()
    finally:
        server.process.stop(STOP_TIMEOUT)
    prefix = f"bench:peers:{peer.kind}:delivery"
    server = start_peer(bench.procs, peer, redis_url, WORKERS, prefix)
    try:
        urls = [peer_url(server, peer, identity) for identity in delivery_ids for _ in range(FAN_OUT)]
        client = NodeLoad(bench.procs, f"peers-load-delivery-{peer.kind}", peer.protocol)
        publisher = NodePublisher(bench.procs, f"peers-publisher-{peer.kind}", peer, redis_url, prefix)
        try:
            delivery = _deliver(
                bench,
                server,
                client,
                urls,
                delivery_ids,
                publisher,
                (publisher.send, publisher.send),
                peer.kind,
                sizes,
            )
        finally:
            publisher.stop()
            client.stop()
    finally:
        server.process.stop(STOP_TIMEOUT)
    return {"label": peer.label, "memory": memory, "delivery": delivery}


def run(bench: Bench, sizes: Sizes | None = None) -> dict[str, Any]:
    """Measure VORA, then each peer, under the same loads, each on fresh servers (sizes: the mode's)."""
    sizes = sizes or sizes_of(bench)
    figures: dict[str, Any] = {
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "memory_connections": sizes.memory_sockets,
        "fan_out": FAN_OUT,
        "rate": RATE,
        "warmup_seconds": sizes.warmup_seconds,
        "paced_seconds": sizes.paced_seconds,
        "burst_events": sizes.burst_events,
        "load_generator": "node bench/peers/load.js (ws for VORA and the relay, socket.io-client for Socket.IO)",
    }
    figures["vora"] = _vora(bench, sizes)
    for peer in PEERS:
        figures[peer.kind] = _peer(bench, peer, sizes)
    return figures


def _losses(delivery: dict[str, Any]) -> int:
    phases = (delivery["warmup"], delivery["paced"], delivery["burst"])
    return int(sum(p["lost"] + p["duplicates"] for p in phases) + delivery["unprimed"] + delivery["wrong_start"])


# Each row: (name, unit, read a figure from a server's results, higher is better)
Metric = tuple[str, str, Callable[[dict[str, Any]], float | None], bool]


def _metrics(figures: dict[str, Any]) -> list[Metric]:
    where = f"@ {figures['rate']:,} ev/s, fan-out {figures['fan_out']}"
    return [
        (
            f"memory per idle connection @ {figures['memory_connections']:,}",
            "KB",
            lambda f: f["memory"]["kb_per_connection"],
            False,
        ),
        (
            f"server CPU per 100,000 deliveries {where}, {figures['paced_seconds']:g} s",
            "s",
            lambda f: f["delivery"]["server_cpu_seconds_per_100k"],
            False,
        ),
        (
            f"deliveries/s, burst of {figures['burst_events']:,} events (capacity)",
            "/s",
            lambda f: f["delivery"]["burst"]["deliveries_per_second"],
            True,
        ),
        (
            f"deliveries/s achieved, paced (offered {figures['rate'] * figures['fan_out']:,}/s)",
            "/s",
            lambda f: f["delivery"]["paced"]["deliveries_per_second"],
            True,
        ),
        (f"event latency p50 {where}", "ms", lambda f: f["delivery"]["paced"]["latency_ms"]["p50_ms"], False),
        (f"event latency p99 {where}", "ms", lambda f: f["delivery"]["paced"]["latency_ms"]["p99_ms"], False),
        ("Redis CPU per 100,000 deliveries", "s", lambda f: f["delivery"]["redis_cpu_seconds_per_100k"], False),
    ]


def rows(figures: dict[str, Any]) -> list[Row]:
    """Each figure of VORA next to the same figure of each peer (ratio VORA/peer)."""
    vora = figures.get("vora")
    if not vora:
        return []
    out = []
    targeted = {0, 1, 2, 4, 5}  # memory, CPU, burst, p50, p99; the paced rate and Redis CPU are reported
    for index, (name, unit, read, higher_better) in enumerate(_metrics(figures)):
        for peer in PEERS:
            theirs = figures.get(peer.kind)
            if not theirs:
                continue
            mine, other = read(vora), read(theirs)
            complete = _losses(vora["delivery"]) == 0 and vora["memory"]["held"] >= vora["memory"]["target"]
            if peer.kind == TARGET_PEER and index in targeted:
                target = ">= 1 x peer" if higher_better else "<= 1 x peer"
                met = None
                if mine is not None and other:
                    met = complete and (mine >= other if higher_better else mine <= other)
            else:
                target, met = ("(floor of the stack)" if peer.kind == "ws" else "(reference)"), None
            out.append(Row(f"P {name}: VORA vs {peer.label}", mine, unit, other, target, met))
    for peer in PEERS:
        theirs = figures.get(peer.kind)
        if theirs:
            out.append(
                Row(
                    f"P events lost or duplicated, or sockets not held: VORA vs {peer.label}",
                    float(_losses(vora["delivery"]) + vora["memory"]["target"] - vora["memory"]["held"]),
                    "",
                    float(_losses(theirs["delivery"]) + theirs["memory"]["target"] - theirs["memory"]["held"]),
                    "0 (VORA)",
                    _losses(vora["delivery"]) == 0 and vora["memory"]["held"] >= vora["memory"]["target"],
                    ratio=None,
                )
            )
    return out
