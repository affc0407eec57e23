"""Tests of scenario 11's report: where the one-event-per-request tail is made."""

from __future__ import annotations

import math

from bench import worker_loop
from bench.scenarios import serverapi


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
