"""Tests of the reader of the instance's other workers' open connections, on real multiprocess gauge files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import multiprocess

from vora.core.settings import Settings
from vora.observability.instance import MULTIPROC_DIR_ENV, OtherWorkers, read_other_workers
from vora.ws.hub import Hub
from vora.ws.window import ReconnectWindow

# A worker as VORA's: its Metrics counts connections opened and closed, by transport, and its limit is published.
WORKER = """
import os, sys
from vora.observability.metrics import Metrics, set_connection_limit
set_connection_limit(1000)
metrics = Metrics()
for name in sys.argv[1:]:
    metrics.count(name.lstrip("-"), -1 if name.startswith("-") else 1)
print(os.getpid())
"""


def run_worker(directory: Path, *counts: str) -> int:
    """Run a process that opens (and, prefixed with '-', closes) connections in directory's files; return its pid."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER, *counts],
        env={**os.environ, MULTIPROC_DIR_ENV: str(directory)},
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_the_other_workers_connections_of_both_transports_are_summed_and_a_dead_workers_dropped(
    tmp_path: Path,
) -> None:
    """Each worker's open WebSockets and event streams count, except the reader's own and a dead worker's."""
    first = run_worker(tmp_path, *["open:websocket"] * 3, *["open:sse"] * 2)
    second = run_worker(tmp_path, *["open:websocket"] * 4, "-open:websocket", "open:sse")
    assert sorted(path.name for path in tmp_path.glob("gauge_live*")) == sorted(
        f"gauge_{mode}_{pid}.db" for mode in ("liveall", "livesum") for pid in (first, second)
    )
    assert read_other_workers(tmp_path, own_pid=os.getpid()) == 5 + 4
    assert read_other_workers(tmp_path, own_pid=first) == 4
    assert read_other_workers(tmp_path, own_pid=second) == 5

    multiprocess.mark_process_dead(first, str(tmp_path))  # as child_exit does
    assert read_other_workers(tmp_path, own_pid=os.getpid()) == 4


def test_the_files_are_read_at_most_once_per_max_age(tmp_path: Path) -> None:
    """Within max_age the count read last is returned; after it, the files are read again."""
    now = [100.0]
    reader = OtherWorkers(tmp_path, max_age=1.0, clock=lambda: now[0])
    run_worker(tmp_path, "open:websocket")
    assert reader.count() == 1
    run_worker(tmp_path, "open:websocket", "open:sse")
    now[0] += 0.999
    assert reader.count() == 1
    now[0] += 0.001
    assert reader.count() == 3


def test_unreadable_files_or_no_directory_give_no_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing directory or a corrupt file is unknown (None), and no multiprocess directory means no reader."""
    assert OtherWorkers(tmp_path / "missing").count() is None
    (tmp_path / "gauge_liveall_1.db").write_bytes((1_000).to_bytes(4, "little") + bytes(12))
    assert OtherWorkers(tmp_path).count() is None
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)
    assert OtherWorkers.from_env() is None
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))
    assert OtherWorkers.from_env() is not None


def test_the_window_adds_the_other_workers_count_or_else_estimates_it() -> None:
    """Count the worker's connections plus the others'; without the others' count, the worker's times the workers."""
    settings = Settings().with_changes(reconnect_rate=1, reconnect_window_min=1.0, reconnect_window_max=100.0)
    others: list[int | None] = [4]
    window = ReconnectWindow(Hub(), settings, lambda: others[0])
    window.workers = 2
    assert window.sockets(opening=1) == 5
    assert window.seconds(opening=1) == 5.0
    others[0] = None
    assert window.sockets(opening=1) == 2
    assert ReconnectWindow(Hub(), settings).sockets(opening=3) == 3
