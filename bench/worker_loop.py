"""What VORA's workers report of their event loops over a phase: the loop-lag probe and garbage collections.

Read from a VORA's metrics port before and after a phase (vora_worker_loop_lag_seconds,
vora_worker_gc_pause_seconds; docs/metrics.md), so that a latency tail can be told apart: workers
whose loops ran late (a turn that did not yield, a garbage collection, a starved process) or a
tail made elsewhere (Redis, the kernel, the load generator). The baseline app has no such metrics.
"""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.procs import Server
from bench.report import Row

LAG = "vora_worker_loop_lag_seconds"
GC = "vora_worker_gc_pause_seconds"
LATE_MS = (5, 10, 25, 100)  # bucket bounds of the lag histogram the report counts probes past


@dataclass(frozen=True)
class LoopSnapshot:
    """Cumulative figures of all workers at one moment."""

    lag_buckets: dict[float, float]  # upper bound (s) -> probes at most that late, summed over workers
    gc: dict[str, tuple[float, float]]  # generation -> (collections, seconds)


def parse(text: str) -> LoopSnapshot:
    """Read the loop-lag buckets and the garbage collections from a metrics page."""
    buckets: dict[float, float] = {}
    gc: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{LAG}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name in (f"{GC}_count", f"{GC}_sum"):
                figures = gc.setdefault(sample.labels["generation"], [0.0, 0.0])
                figures[0 if sample.name.endswith("_count") else 1] += sample.value
    return LoopSnapshot(buckets, {generation: (count, total) for generation, (count, total) in gc.items()})


def snapshot(server: Server) -> LoopSnapshot | None:
    """Read a VORA's loop figures from its metrics port; None for the baseline app, which has none."""
    if server.name != "vora":
        return None
    with urllib.request.urlopen(server.metrics_url, timeout=5) as answer:  # noqa: S310 - a loopback URL of ours
        return parse(answer.read().decode())


def between(before: LoopSnapshot | None, after: LoopSnapshot | None) -> dict[str, Any] | None:
    """Report the probes and collections of the phase between two snapshots."""
    if before is None or after is None:
        return None
    lag = {bound: after.lag_buckets.get(bound, 0.0) - before.lag_buckets.get(bound, 0.0) for bound in after.lag_buckets}
    gc = {}
    for generation, (count, total) in after.gc.items():
        count_before, total_before = before.gc.get(generation, (0.0, 0.0))
        gc[generation] = (count - count_before, total - total_before)
    return summary(lag, gc)


def summary(lag: dict[float, float], gc: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Turn a phase's bucket counts and collections into the report's fields (kept for merging rounds)."""
    probes = lag.get(math.inf, 0.0)
    p99_bound = next((bound for bound in sorted(lag) if probes and lag[bound] >= 0.99 * probes), math.inf)
    return {
        "probes": int(probes),
        "late": {f"over_{ms}ms": int(probes - lag.get(ms / 1000, probes)) for ms in LATE_MS},
        "lag_p99_at_most_ms": None if math.isinf(p99_bound) else round(p99_bound * 1000, 1),
        "gc": {
            generation: {"collections": int(count), "ms": round(total * 1000, 2)}
            for generation, (count, total) in sorted(gc.items())
        },
        "buckets": {str(bound): int(count) for bound, count in sorted(lag.items())},
    }


def merged(reports: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Add up the reports of a leg's rounds."""
    present = [report for report in reports if report is not None]
    if not present:
        return None
    lag: dict[float, float] = {}
    gc: dict[str, tuple[float, float]] = {}
    for report in present:
        for bound, count in report["buckets"].items():
            lag[float(bound)] = lag.get(float(bound), 0.0) + count
        for generation, figures in report["gc"].items():
            count, total = gc.get(generation, (0.0, 0.0))
            gc[generation] = (count + figures["collections"], total + figures["ms"] / 1000)
    return summary(lag, gc)


def rows(scenario: str, loop: dict[str, Any] | None) -> list[Row]:
    """Report VORA's workers' loop lag and garbage collections over the paced phase: is the tail theirs."""
    if not loop or not loop["probes"]:
        return []
    late = 100 * loop["late"]["over_5ms"] / loop["probes"]
    collections = sum(figures["collections"] for figures in loop["gc"].values())
    return [
        Row(
            f"{scenario} VORA workers: loop probes later than 5 ms (of {loop['probes']:,}, every 50 ms)",
            round(late, 2),
            "%",
            None,
            "(reported: a tail the workers' loops made)",
            None,
        ),
        Row(
            f"{scenario} VORA workers: garbage collection pauses ({collections:,} collections)",
            round(sum(figures["ms"] for figures in loop["gc"].values()), 1),
            "ms",
            None,
            "(reported: summed over the phase)",
            None,
        ),
    ]
