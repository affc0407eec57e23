"""Bound the WebSocket handshakes one worker has in progress, turning the excess away at once."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class HandshakeGate:
    """Let at most a bound of handshakes do their Redis work at once; refuse the rest without waiting."""

    def __init__(self, bound: int) -> None:
        # gevent patches threading: the semaphore counts greenlets, and a refused acquire never blocks.
        self._slots = threading.BoundedSemaphore(bound)

    @contextlib.contextmanager
    def entered(self) -> Iterator[bool]:
        """Hold a place for one handshake while the block runs; yield False (and hold nothing) when none is free."""
        if not self._slots.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            self._slots.release()
