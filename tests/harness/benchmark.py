"""The benchmark's own context (bench.context.Bench) for tests that drive its load generators or scenarios."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bench.context import Bench
from bench.procs import Launcher
from testbed.procs import stop_all
from testbed.redis_procs import RedisServer


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    """Run the benchmark's own context: a Redis of its own, its dev key, its launcher, no deadline to speak of."""
    workdir = tmp_path_factory.mktemp("bench")
    redis_server = RedisServer(workdir=workdir / "redis").start()
    try:
        yield Bench(Launcher(workdir), redis_server, workdir, None, True, time.monotonic() + 3600)
    finally:
        stop_all()
        redis_server.stop()
