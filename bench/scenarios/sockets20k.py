"""Scenario 8, 20,000 sockets on one instance: scenario 3's idle sockets, twice as many, on 2 workers.

The same method as scenario 3 (steps of idle authenticated sockets, RSS of master and workers
against the idle figure), on fresh servers, in steps of 5,000, 10,000 and 20,000: each worker
then holds about 10,000 sockets (VORA_WORKER_CONNECTIONS is 20,000 per worker) and the load
generator's two processes (SOCKETS_PER_PROCESS is 15,000), from 127.0.0.2 and 127.0.0.3, 10,000
each. Not in the default run (`--only sockets20k` or `pressure`).
"""

from __future__ import annotations

from typing import Any

from bench.context import Bench, identities
from bench.report import Row
from bench.scenarios.sockets import hold_steps, step_rows

USER = "bench-sockets20k"
SESSIONS = 100
STEPS = (5000, 10_000, 20_000)
QUICK_STEPS = (1000, 2000)


def run(bench: Bench) -> dict[str, Any]:
    """Hold up to 20,000 idle sockets on VORA, then on the baseline app."""
    steps = QUICK_STEPS if bench.quick else STEPS
    return hold_steps(bench, USER, identities("7700", SESSIONS), steps, "sockets20k")


def rows(figures: dict[str, Any]) -> list[Row]:
    """Memory per socket and accept time at each step; the 1.05 x baseline target at 20,000."""
    return step_rows(figures, 8, 20_000)
