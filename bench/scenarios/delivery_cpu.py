"""Scenario 7, CPU per delivery: server CPU seconds per 100,000 deliveries at a paced 1,000 events/s.

The sockets are those of scenario 4 (50 identities x 20 subscribe-all sockets, fan-out 20), held
for a longer paced phase (PACED_SECONDS). CPU is user+system time of the gunicorn master and
workers (psutil) across the phase, so it covers the whole event path inside the server: the
pub/sub read, the hub, the filter, the envelope and the socket writes. Redis' own CPU over the
same phase is reported beside it (VORA appends to a stream through Lua; the baseline only
PUBLISHes). The p99 of the same phase is held against three times the baseline's.
"""

from __future__ import annotations

from typing import Any

from bench.context import Bench, identities
from bench.procs import Server
from bench.report import Row
from bench.scenarios.fanout import (
    FAN_OUT,
    RATE,
    BaselinePublisher,
    Publisher,
    open_primed,
    phase,
    socket_urls,
    vora_publisher,
)
from bench.wsclient import WsLoad

USER = "bench-delivery-cpu"
PACED_SECONDS = 20
PER = 100_000  # deliveries the CPU figure is normalised to
TARGET_CPU_RATIO = 1.5
TARGET_P99_RATIO = 3.0


def _measure(
    bench: Bench, server: Server, urls: list[str], ids: list[str], publish: Publisher, label: str
) -> dict[str, Any]:
    client = WsLoad(bench.procs, f"wsclient-delivery-cpu-{label}")
    try:
        held = open_primed(client, urls, ids, publish)
        count = int(RATE * bench.seconds(PACED_SECONDS, 4))
        redis_before = bench.redis_cpu_seconds()
        paced = phase(bench, client, server, publish, ids, count, RATE, f"delivery_cpu-{label}")
        redis_cpu = bench.redis_cpu_seconds() - redis_before
        client.call({"cmd": "close"}, timeout=120)
    finally:
        client.stop()
    deliveries = paced["deliveries"]
    return {
        **held,
        "paced": paced,
        "server_cpu_seconds": paced["server_cpu_seconds"],
        "redis_cpu_seconds": round(redis_cpu, 3),
        "server_cpu_seconds_per_100k": round(paced["server_cpu_seconds"] * PER / deliveries, 3) if deliveries else None,
        "redis_cpu_seconds_per_100k": round(redis_cpu * PER / deliveries, 3) if deliveries else None,
    }


def run(bench: Bench) -> dict[str, Any]:
    """Hold scenario 4's sockets on VORA, then on the baseline, through one long paced phase each."""
    ids = identities("7610", 50)
    figures: dict[str, Any] = {"rate": RATE, "fan_out": FAN_OUT, "paced_seconds": bench.seconds(PACED_SECONDS, 4)}
    with bench.servers() as (vora, baseline):
        vora_urls, base_urls = socket_urls(bench, vora, baseline, USER, ids)
        figures["vora"] = _measure(bench, vora, vora_urls, ids, vora_publisher(bench.publisher), "vora")
        figures["baseline"] = _measure(bench, baseline, base_urls, ids, BaselinePublisher(bench.redis), "baseline")
    return figures


def rows(figures: dict[str, Any]) -> list[Row]:
    """CPU per 100,000 deliveries and the paced p99, VORA next to the baseline."""
    vora, base = figures.get("vora"), figures.get("baseline")
    if not vora or not base or not vora["server_cpu_seconds_per_100k"] or not base["server_cpu_seconds_per_100k"]:
        return []
    cpu_ratio = vora["server_cpu_seconds_per_100k"] / base["server_cpu_seconds_per_100k"]
    p99_v, p99_b = vora["paced"]["latency_ms"]["p99_ms"], base["paced"]["latency_ms"]["p99_ms"]
    complete = vora["paced"]["lost"] + vora["paced"]["duplicates"] == 0
    where = f"@ {figures['rate']:,} ev/s, fan-out {figures['fan_out']}, {figures['paced_seconds']:g} s"
    return [
        Row(
            f"7 server CPU per 100,000 deliveries {where}",
            vora["server_cpu_seconds_per_100k"],
            "s",
            base["server_cpu_seconds_per_100k"],
            f"<= {TARGET_CPU_RATIO:g} x baseline",
            cpu_ratio <= TARGET_CPU_RATIO and complete,
            note="" if complete else "events lost or duplicated",
        ),
        Row(
            "7 Redis CPU per 100,000 deliveries",
            vora["redis_cpu_seconds_per_100k"],
            "s",
            base["redis_cpu_seconds_per_100k"],
            "(reported: stream + Lua vs PUBLISH)",
            None,
        ),
        Row(
            f"7 event latency p99 {where}",
            p99_v,
            "ms",
            p99_b,
            f"<= {TARGET_P99_RATIO:g} x baseline",
            p99_b > 0 and p99_v <= TARGET_P99_RATIO * p99_b,
        ),
    ]
