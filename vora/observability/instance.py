"""The event connections the instance's other workers hold, read from their live gauge files.

A gunicorn worker knows only its own connections. In prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by vora.gunicorn_conf) every worker writes vora_open_connections,
by transport, to its own gauge_liveall_<pid>.db at once on each open and close (Metrics.count does
not batch the "open:" gauges), and the master deletes a dead worker's live gauge files
(mark_process_dead in child_exit): summing the other live files gives the rest of the instance.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

from vora.observability.metrics import OPEN_CONNECTIONS_METRIC

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_AGE_SECONDS = 1.0  # read on every channelOpened and heartbeat: the files at most once a second
# vora_open_connections (both transports) is a liveall gauge: the livesum vora_ws_open_sockets counts WebSockets only.
_FILE_PATTERN = "gauge_liveall_*.db"


def read_other_workers(directory: Path, own_pid: int) -> int:
    """Return the connections open in every live worker's gauge file but own_pid's; raise OSError when unreadable."""
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory}: no multiprocess directory")
    total = 0.0
    for path in directory.glob(_FILE_PATTERN):
        pid = path.stem.rpartition("_")[2]
        if pid == str(own_pid):
            continue  # this worker's own count is its hub's, live
        try:
            entries = list(MmapedDict.read_all_values_from_file(str(path)))  # type: ignore[no-untyped-call]
        except FileNotFoundError:
            continue  # its worker died and the master removed it after the listing: nothing open there
        except (struct.error, RuntimeError) as exc:  # shorter than its header, or a length beyond it
            raise OSError(f"{path}: unreadable gauge file ({exc})") from exc
        for key, value, _timestamp, _position in entries:
            if json.loads(key)[0] == OPEN_CONNECTIONS_METRIC:
                total += value
    return max(0, round(total))


class OtherWorkers:
    """Know the connections the instance's other workers hold, read from their files at most once a second."""

    __slots__ = ("_clock", "_count", "_directory", "_fresh_until", "_max_age", "_pid")

    def __init__(
        self,
        directory: Path,
        *,
        max_age: float = MAX_AGE_SECONDS,
        pid: Callable[[], int] = os.getpid,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._max_age = max_age
        self._pid = pid  # read at each refresh: the worker is a fork of whatever built this
        self._clock = clock
        self._count: int | None = None
        self._fresh_until = float("-inf")

    @classmethod
    def from_env(cls) -> OtherWorkers | None:
        """Return a reader of the multiprocess directory, or None when multiprocess mode is off."""
        directory = os.environ.get(MULTIPROC_DIR_ENV)
        return cls(Path(directory)) if directory else None

    def count(self) -> int | None:
        """Return the other workers' open connections as read within max_age, None when the files cannot be read."""
        now = self._clock()
        if now < self._fresh_until:
            return self._count
        try:
            self._count = read_other_workers(self._directory, self._pid())
        except (OSError, ValueError):  # a missing directory, a file that is no gauge file
            self._count = None
        self._fresh_until = now + self._max_age
        return self._count
