"""Count what happens on a worker: sockets, events, Redis trouble."""

from __future__ import annotations

import threading


class Metrics:
    """Hold this worker's counters and gauges by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {}

    def count(self, name: str, amount: int = 1) -> None:
        """Add amount (which may be negative, for gauges) to a named value."""
        with self._lock:
            self.values[name] = self.values.get(name, 0) + amount

    def get(self, name: str) -> int:
        """Return a named value, zero when nothing was counted."""
        return self.values.get(name, 0)
