"""Tests of the REST load generator's command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.httpload import LoadSpec, wrk_argv


@pytest.mark.parametrize(("seconds", "duration"), [(0.4, "1s"), (1.5, "2s"), (8.0, "8s")])
def test_wrk_gets_whole_seconds(seconds: float, duration: str) -> None:
    """A load's duration reaches wrk rounded up to whole seconds, which is all wrk accepts."""
    argv = wrk_argv("wrk", LoadSpec("http://127.0.0.1:1/identity", seconds=seconds), Path("load.lua"))
    assert argv[argv.index("-d") + 1] == duration
