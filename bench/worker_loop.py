"""What VORA's workers report over a phase: the loop-lag probe, garbage collections, and when they wrote events.

Read from a VORA's metrics port before and after a phase (vora_worker_loop_lag_seconds,
vora_worker_gc_pause_seconds, vora_event_delivery_seconds; docs/metrics.md), so that a latency
tail can be told apart: workers whose loops ran late (a turn that did not yield, a garbage
collection, a starved process), events written late after their publication (Redis, the notice,
the hub), or a tail made after the write (the kernel, the load generator). The baseline app has no
such metrics.
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
WRITTEN = "vora_event_delivery_seconds"  # publication (the eventId's Redis time) to the write to a socket
LATE_MS = (5, 10, 25, 100)  # bucket bounds of both histograms the report counts probes and writes past


@dataclass(frozen=True)
class LoopSnapshot:
    """Cumulative figures of all workers at one moment."""

    lag_buckets: dict[float, float]  # upper bound (s) -> probes at most that late, summed over workers
    gc: dict[str, tuple[float, float]]  # generation -> (collections, seconds)
    written_buckets: dict[float, float]  # upper bound (s) -> live deliveries written at most that long after publishing


def parse(text: str) -> LoopSnapshot:
    """Read the loop-lag and write-latency buckets and the garbage collections from a metrics page."""
    buckets: dict[float, float] = {}
    written: dict[float, float] = {}  # summed over transports: a leg's rounds alternate, one transport at a time
    gc: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (f"{LAG}_bucket", f"{WRITTEN}_bucket"):
                into = buckets if sample.name == f"{LAG}_bucket" else written
                bound = float(sample.labels["le"])
                into[bound] = into.get(bound, 0.0) + sample.value
            elif sample.name in (f"{GC}_count", f"{GC}_sum"):
                figures = gc.setdefault(sample.labels["generation"], [0.0, 0.0])
                figures[0 if sample.name.endswith("_count") else 1] += sample.value
    return LoopSnapshot(buckets, {generation: (count, total) for generation, (count, total) in gc.items()}, written)


def snapshot(server: Server) -> LoopSnapshot | None:
    """Read a VORA's loop figures from its metrics port; None for the baseline app, which has none."""
    if server.name != "vora":
        return None
    with urllib.request.urlopen(server.metrics_url, timeout=5) as answer:  # noqa: S310 - a loopback URL of ours
        return parse(answer.read().decode())


def between(before: LoopSnapshot | None, after: LoopSnapshot | None) -> dict[str, Any] | None:
    """Report the probes, collections and writes of the phase between two snapshots."""
    if before is None or after is None:
        return None
    lag = {bound: after.lag_buckets.get(bound, 0.0) - before.lag_buckets.get(bound, 0.0) for bound in after.lag_buckets}
    written = {
        bound: after.written_buckets.get(bound, 0.0) - before.written_buckets.get(bound, 0.0)
        for bound in after.written_buckets
    }
    gc = {}
    for generation, (count, total) in after.gc.items():
        count_before, total_before = before.gc.get(generation, (0.0, 0.0))
        gc[generation] = (count - count_before, total - total_before)
    return summary(lag, gc, written)


def _p99_bound_ms(buckets: dict[float, float]) -> float | None:
    """Return the smallest bucket bound (ms) that holds 99 % of a histogram's counts, or None."""
    total = buckets.get(math.inf, 0.0)
    bound = next((bound for bound in sorted(buckets) if total and buckets[bound] >= 0.99 * total), math.inf)
    return None if math.isinf(bound) else round(bound * 1000, 1)


def summary(
    lag: dict[float, float], gc: dict[str, tuple[float, float]], written: dict[float, float] | None = None
) -> dict[str, Any]:
    """Turn a phase's bucket counts and collections into the report's fields (kept for merging rounds)."""
    probes = lag.get(math.inf, 0.0)
    written = written or {}
    writes = written.get(math.inf, 0.0)
    return {
        "probes": int(probes),
        "late": {f"over_{ms}ms": int(probes - lag.get(ms / 1000, probes)) for ms in LATE_MS},
        "lag_p99_at_most_ms": _p99_bound_ms(lag),
        "written": int(writes),
        "written_late": {f"over_{ms}ms": int(writes - written.get(ms / 1000, writes)) for ms in LATE_MS},
        "written_p99_at_most_ms": _p99_bound_ms(written),
        "written_buckets": {str(bound): int(count) for bound, count in sorted(written.items())},
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
    written: dict[float, float] = {}
    gc: dict[str, tuple[float, float]] = {}
    for report in present:
        for bound, count in report["buckets"].items():
            lag[float(bound)] = lag.get(float(bound), 0.0) + count
        for bound, count in report.get("written_buckets", {}).items():
            written[float(bound)] = written.get(float(bound), 0.0) + count
        for generation, figures in report["gc"].items():
            count, total = gc.get(generation, (0.0, 0.0))
            gc[generation] = (count + figures["collections"], total + figures["ms"] / 1000)
    return summary(lag, gc, written)


def late_share(loop: dict[str, Any]) -> float:
    """Return the percentage of a report's loop probes that ran more than 5 ms late (two decimals)."""
    late: float = round(100 * loop["late"]["over_5ms"] / loop["probes"], 2)
    return late


def rows(scenario: str, loop: dict[str, Any] | None) -> list[Row]:
    """Report VORA's workers' loop lag, garbage collections and late writes over the paced phase: is the tail theirs."""
    if not loop or not loop["probes"]:
        return []
    collections = sum(figures["collections"] for figures in loop["gc"].values())
    writes = loop.get("written", 0)
    written = (
        [
            Row(
                f"{scenario} VORA workers: p99 from publication to the write, at most (of {writes:,} live deliveries)",
                loop["written_p99_at_most_ms"],
                "ms",
                None,
                "(reported: bucket bound, eventIds count whole ms; a client p99 above it was made after the write)",
                None,
            )
        ]
        if writes
        else []
    )
    return [
        Row(
            f"{scenario} VORA workers: loop probes later than 5 ms (of {loop['probes']:,}, every 50 ms)",
            late_share(loop),
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
        *written,
    ]
