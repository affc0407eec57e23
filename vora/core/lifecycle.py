"""Track whether this worker is draining."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Lifecycle:
    """Hold the worker's draining flag and the callbacks that run when draining starts."""

    def __init__(self) -> None:
        self._draining = threading.Event()
        self._on_drain: list[Callable[[], None]] = []

    @property
    def draining(self) -> bool:
        """Tell whether the worker has been asked to stop."""
        return self._draining.is_set()

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Run a callback when draining starts."""
        self._on_drain.append(callback)

    def drain(self) -> None:
        """Start draining: probes turn 503 and the callbacks run once."""
        if self._draining.is_set():
            return
        self._draining.set()
        for callback in self._on_drain:
            callback()
