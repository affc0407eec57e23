"""Freeze a real process for a while: a Redis or a server that keeps its connections and answers nothing."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def frozen(pid: int | None) -> Iterator[None]:
    """Stop a process with SIGSTOP until the block ends, then let it go on (SIGCONT), whatever the block raised."""
    assert pid is not None, "the process is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
