"""Tests of scenario 11's report: where the one-event-per-request tail is made."""

from __future__ import annotations

import functools
import math

from bench import worker_loop
from bench.scenarios import fanout, serverapi


def test_the_loop_rows_set_the_http_phase_beside_the_python_one() -> None:
    """Late probes and the write p99 bound of the HTTP phase sit next to the Python phase's; no writes, no rows."""
    busy = worker_loop.summary(
        {0.005: 90.0, 0.01: 100.0, math.inf: 100.0}, {}, {0.001: 60.0, 0.025: 100.0, math.inf: 100.0}
    )
    quiet = worker_loop.summary({0.005: 100.0, math.inf: 100.0}, {}, {0.001: 100.0, math.inf: 100.0})
    late, written = serverapi._loop_rows(busy, quiet)
    assert (late.measured, late.baseline, late.unit) == (10.0, 0.0, "%")
    assert (written.measured, written.baseline, written.ratio) == (25.0, 1.0, 25.0)
    assert serverapi._loop_rows(worker_loop.summary({math.inf: 100.0}, {}), quiet) == []
    assert serverapi._loop_rows(None, quiet) == []


def test_the_call_rows_set_a_requests_round_trip_beside_the_python_publishers_call() -> None:
    """Median and p99 of the publish call on each path, HTTP measured against Python; none without both."""
    median, p99 = serverapi._call_rows({"p50_ms": 1.5, "p99_ms": 9.0}, {"p50_ms": 0.25, "p99_ms": 1.5})
    assert (median.measured, median.baseline, median.ratio) == (1.5, 0.25, 6.0)
    assert (p99.measured, p99.baseline, p99.ratio) == (9.0, 1.5, 6.0)
    assert serverapi._call_rows(None, {"p50_ms": 0.25, "p99_ms": 1.5}) == []


def test_a_schedule_times_each_call_and_reports_its_median_and_p99() -> None:
    """The schedule's report holds the calls' median and p99 in ms, and None when no call was timed."""
    schedule = fanout.Schedule(None)
    assert schedule.report(0, {})["call_ms"] is None
    answers = [schedule.timed(functools.partial(int, n)) for n in range(3)]
    schedule.calls[:] = [0.001 * n for n in range(1, 101)]
    assert answers == [0, 1, 2]
    assert schedule.report(100, {})["call_ms"] == {"p50_ms": 51.0, "p99_ms": 100.0}


def test_the_apart_row_sets_the_publishes_on_an_instance_of_their_own_beside_the_python_path() -> None:
    """The p99 with the publishes on a second instance is measured against the Python path's; none without both."""

    def phase(p99_ms: float, lag_ms: float) -> dict[str, object]:
        return {"paced": {"latency_ms": {"p99_ms": p99_ms}, "publish": {"worst_lag_ms": lag_ms}}}

    figures = {"rate": 1000, "latency_http_apart": phase(6.0, 60.0), "latency_python": phase(2.0, 0.0)}
    (row,) = serverapi._apart_rows(figures)
    assert (row.measured, row.baseline, row.ratio, row.met) == (6.0, 2.0, 3.0, None)
    assert "fell behind its schedule by up to 60 ms" in row.note
    assert serverapi._apart_rows({"rate": 1000, "latency_python": phase(2.0, 0.0)}) == []
