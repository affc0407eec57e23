"""Tests of the benchmark's reading of VORA's workers' loop lag and garbage collections."""

from __future__ import annotations

import math

import pytest

from bench import worker_loop
from bench.context import Bench, identities
from bench.scenarios.fanout import publish_events, vora_publisher
from bench.wsclient import WsLoadPool
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
    assert report["written"] == 0, "nothing was published between the two reads"
    assert worker_loop.between(before, None) is None
    twice = worker_loop.merged([report, None, report])
    assert twice is not None
    assert twice["probes"] == 2 * report["probes"]
    assert twice["gc"]["0"]["collections"] == 2 * report["gc"]["0"]["collections"]


@pytest.mark.ws
def test_events_written_to_a_socket_on_vora_are_counted_with_their_delay_after_publication(bench: Bench) -> None:
    """Ten events published to one real stream show as ten writes between two reads, each within the last bucket."""
    ids = identities("7990", 1)
    with bench.servers() as (vora, _baseline):
        [token] = bench.open_sessions(vora, "bench-test-written", ids, per_identity=1)
        client = WsLoadPool(bench.procs, "load-written", 1)
        try:
            opened = client.call(
                {"cmd": "open", "urls": [f"{vora.stream_url('ws')}?token={token}"], "concurrency": 1}, timeout=60
            )
            assert opened["held"] == 1, opened
            before = worker_loop.snapshot(vora)
            assert before is not None
            publish_events(vora_publisher(bench.publisher), ids, 10, rate=None)

            def ten_writes() -> worker_loop.LoopSnapshot | None:
                snap = worker_loop.snapshot(vora)
                written = snap.written_buckets.get(math.inf, 0.0) if snap is not None else 0.0
                return snap if written >= before.written_buckets.get(math.inf, 0.0) + 10 else None

            report = worker_loop.between(before, wait_for(ten_writes, 10, what="ten writes counted"))
            client.call({"cmd": "close"}, timeout=30)
        finally:
            client.stop()
    assert report is not None
    assert report["written"] == 10
    assert report["written_p99_at_most_ms"] is not None


def test_the_summary_counts_writes_later_than_each_bound_after_publication() -> None:
    """Of 1,000 writes, 5 between 10 and 25 ms after publication: p99 at most 5 ms, 0.5 % over 10 ms."""
    lag = {0.005: 10.0, math.inf: 10.0}
    written = {0.001: 900.0, 0.005: 990.0, 0.01: 995.0, 0.025: 1000.0, 0.1: 1000.0, math.inf: 1000.0}
    summary = worker_loop.summary(lag, {}, written)
    assert summary["written"] == 1000
    assert summary["written_late"] == {"over_5ms": 10, "over_10ms": 5, "over_25ms": 0, "over_100ms": 0}
    assert summary["written_p99_at_most_ms"] == 5.0
    twice = worker_loop.merged([summary, summary])
    assert twice is not None
    assert (twice["written"], twice["written_late"]["over_10ms"]) == (2000, 10)
    *_, late_writes = worker_loop.rows("4", twice)
    assert (late_writes.measured, late_writes.unit) == (5.0, "ms")
    assert len(worker_loop.rows("1 GET", worker_loop.summary(lag, {}))) == 2, "no writes (REST): no write row"


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
