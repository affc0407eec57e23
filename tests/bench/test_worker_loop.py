"""Tests of the benchmark's reading of VORA's workers' loop lag and garbage collections."""

from __future__ import annotations

import math

import pytest

from bench import worker_loop
from bench.context import Bench
from testbed.wait import wait_for

pytestmark = [pytest.mark.slow]


def test_a_phase_on_vora_reports_its_workers_probes_and_collections(bench: Bench) -> None:
    """Between two reads of a real VORA's metrics the probes advance; the baseline app reports none."""
    with bench.servers() as (vora, baseline):
        before = worker_loop.snapshot(vora)
        assert before is not None
        probes_before = before.lag_buckets[math.inf]

        def ten_more_probes() -> worker_loop.LoopSnapshot | None:
            snap = worker_loop.snapshot(vora)
            return snap if snap is not None and snap.lag_buckets[math.inf] >= probes_before + 10 else None

        after = wait_for(ten_more_probes, 10, what="ten more probes")
        report = worker_loop.between(before, after)
        assert worker_loop.snapshot(baseline) is None
    assert report is not None
    assert report["probes"] >= 10
    assert set(report["late"]) == {"over_5ms", "over_10ms", "over_25ms", "over_100ms"}
    assert set(report["gc"]) == {"0", "1", "2"}
    assert worker_loop.between(before, None) is None
    twice = worker_loop.merged([report, None, report])
    assert twice is not None
    assert twice["probes"] == 2 * report["probes"]
    assert twice["gc"]["0"]["collections"] == 2 * report["gc"]["0"]["collections"]


def test_the_summary_counts_late_probes_and_bounds_the_p99() -> None:
    """Of 100 probes, one between 5 and 10 ms late: p99 is at most 5 ms, one probe is over 5 ms, none over 10."""
    lag = {0.001: 98.0, 0.005: 99.0, 0.01: 100.0, 0.025: 100.0, 0.1: 100.0, math.inf: 100.0}
    summary = worker_loop.summary(lag, {"2": (1.0, 0.004)})
    assert summary["probes"] == 100
    assert summary["lag_p99_at_most_ms"] == 5.0
    assert summary["late"] == {"over_5ms": 1, "over_10ms": 0, "over_25ms": 0, "over_100ms": 0}
    assert summary["gc"] == {"2": {"collections": 1, "ms": 4.0}}
    merged = worker_loop.merged([summary])
    assert merged is not None
    assert merged["late"] == summary["late"]
    late, pauses = worker_loop.rows("4", summary)
    assert (late.measured, late.unit, pauses.measured, pauses.unit) == (1.0, "%", 4.0, "ms")
    assert worker_loop.rows("4", None) == []
