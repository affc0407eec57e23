"""The reconnect window an instance announces to its sockets (channelOpened, heartbeat, the event stream's retry).

When an instance dies or drains, every socket it held reconnects elsewhere at once, each after a
full-jitter delay drawn from zero to this window. The window is the time the rest of the fleet
needs to take the crowd: the sockets held here over the admissions per second the fleet absorbs
from one instance's crowd (VORA_RECONNECT_RATE), within VORA_RECONNECT_WINDOW_MIN and _MAX. A
small instance's clients thus come back within a second or so instead of the fixed 20 s.

The sockets held here are the instance's, all its workers': this worker's own, live, and the
others' as their metrics files said within the last second (vora.observability.instance).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from vora.core.settings import Settings
from vora.ws.hub import Hub


def window_seconds(sockets: int, rate: int, low: float, high: float) -> float:
    """Return the seconds a fleet admitting rate sockets a second needs for sockets, clamped to [low, high]."""
    return float(min(high, max(low, math.ceil(sockets / rate))))


class ReconnectWindow:
    """Know the instance's reconnect window from the connections open on all its workers.

    A worker knows only its own sockets: other_workers says how many the instance's other workers
    hold (None when unknown). Without it (no multiprocess metrics directory, unreadable files) the
    instance's count is estimated as this worker's times the number of workers, which overshoots
    on the worker that took more of the connections.
    """

    __slots__ = ("_high", "_hub", "_low", "_other_workers", "_rate", "workers")

    def __init__(self, hub: Hub, settings: Settings, other_workers: Callable[[], int | None] | None = None) -> None:
        self._hub = hub
        self._rate = settings.reconnect_rate
        self._low = settings.reconnect_window_min
        self._high = settings.reconnect_window_max
        self._other_workers = other_workers
        self.workers = 1  # gunicorn's worker count, set in each worker once it runs (vora.gunicorn_conf)

    def sockets(self, opening: int = 0) -> int:
        """Return the instance's open connections, counting opening ones not registered here yet."""
        own = self._hub.open_count + opening
        others = self._other_workers() if self._other_workers is not None else None
        return own * self.workers if others is None else own + others

    def seconds(self, opening: int = 0) -> float:
        """Return the window now, counting opening connections not registered yet (the one being opened)."""
        return window_seconds(self.sockets(opening), self._rate, self._low, self._high)
