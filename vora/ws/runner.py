"""Run a worker's socket side: the bus reader feeding the hub, and the lease keeper."""

from __future__ import annotations

import threading

from vora.store.bus import ControlNotice, EventBus, EventNotice
from vora.ws.connection import Metric
from vora.ws.hub import Hub
from vora.ws.leases import LeaseKeeper


class HubRunner:
    """Start, once per worker, the greenlets that read the bus into the hub and renew leases."""

    def __init__(
        self, *, bus: EventBus, hub: Hub, leases: LeaseKeeper, on_metric: Metric = lambda name, n: None
    ) -> None:
        self._bus = bus
        self._hub = hub
        self._leases = leases
        self._metric = on_metric
        self._lock = threading.Lock()
        self._started = False

    def ensure_started(self, timeout: float) -> bool:
        """Start the reader and lease greenlets once, and wait until the subscription is live."""
        with self._lock:
            if not self._started:
                self._started = True
                threading.Thread(target=self._bus.listen_forever, args=(self,), name="vora-bus", daemon=True).start()
                threading.Thread(target=self._leases.keep_forever, name="vora-leases", daemon=True).start()
        return self._bus.subscribed.wait(timeout)

    # The bus listener.

    def on_event(self, notice: EventNotice) -> None:
        """Route an event to the hub's connections."""
        self._hub.deliver(notice)

    def on_control(self, notice: ControlNotice) -> None:
        """Route a session change to the hub's connections."""
        self._hub.apply(notice)

    def on_gap(self) -> None:
        """Make every connection re-read its stream and re-read every session now: notices were missed."""
        self._metric("reconnect", 1)
        self._hub.resync_all()
        self._leases.renew_soon()
