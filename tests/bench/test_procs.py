"""Tests of the benchmark's process readings: the run-queue wait REST loads record beside their latencies."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bench.procs import scheduler_waits
from testbed.wait import wait_for

SPIN = "while True: pass"


@pytest.fixture
def two_spinners_on_one_cpu() -> Iterator[list[int]]:
    """Start two busy Python processes that share CPU 0, so each waits while the other runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2)]
    try:
        for spinner in spinners:
            os.sched_setaffinity(spinner.pid, {0})
        yield [spinner.pid for spinner in spinners]
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_processes_sharing_one_cpu_accumulate_run_queue_wait(two_spinners_on_one_cpu: list[int]) -> None:
    """Two processes pinned to one CPU show a growing wait for it and a growing count of time slices."""
    waited, slices = scheduler_waits(two_spinners_on_one_cpu)
    wait_for(lambda: scheduler_waits(two_spinners_on_one_cpu)[0] >= waited + 0.2, timeout=20)
    assert scheduler_waits(two_spinners_on_one_cpu)[1] > slices


def test_a_process_that_is_gone_adds_nothing() -> None:
    """A pid whose process has exited is read as no wait and no slices, not an error."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert scheduler_waits([gone.pid]) == (0.0, 0)
