"""Keep the sessions of this worker's open sockets alive, and close those that ended unseen."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from vora.core import clock
from vora.core.log_fields import error_fields
from vora.core.settings import Settings
from vora.store.client import REDIS_TROUBLE
from vora.store.sessions import Lease, SessionStore
from vora.ws.connection import Connection, Metric
from vora.ws.hub import Hub

log = logging.getLogger("vora.ws.leases")


def presence_lease_ms(settings: Settings) -> int:
    """Return how long a socket counts as open after its last renewal: three lease intervals."""
    return int(settings.ws_lease_interval * 3000)


class LeaseKeeper:
    """Renew, every lease interval, the sessions and presence of the hub's connections."""

    def __init__(
        self,
        hub: Hub,
        sessions: SessionStore,
        *,
        interval: float,
        session_max_age_ms: int,
        presence_lease_ms: int,
        on_metric: Metric = lambda name, n: None,
    ) -> None:
        self._hub = hub
        self._sessions = sessions
        self._interval = interval
        self._max_age_ms = session_max_age_ms
        self._presence_lease_ms = presence_lease_ms
        self._metric = on_metric
        self._renew_now = threading.Event()

    @classmethod
    def from_settings(
        cls, hub: Hub, sessions: SessionStore, settings: Settings, on_metric: Metric = lambda name, n: None
    ) -> LeaseKeeper:
        """Build a keeper with the lease interval and session age the settings give."""
        return cls(
            hub,
            sessions,
            interval=settings.ws_lease_interval,
            session_max_age_ms=settings.session_max_age * 1000,
            presence_lease_ms=presence_lease_ms(settings),
            on_metric=on_metric,
        )

    def renew_soon(self) -> None:
        """Renew at once rather than at the next interval (control notices were missed)."""
        self._renew_now.set()

    def keep_forever(self) -> None:
        """Renew every interval until the process ends, whatever fails."""
        while True:
            self._renew_now.wait(self._interval)
            self._renew_now.clear()
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - open sessions must keep being renewed after any failure
                self._metric("redis_error:lease", 1)
                log.warning(
                    "lease renewal failed",
                    extra={"fields": error_fields(exc)},
                    exc_info=not isinstance(exc, REDIS_TROUBLE),
                )

    def renew(self) -> None:
        """Extend the TTL of every session with an open socket, re-read its subscription, close those that ended."""
        conns = self._hub.connections()
        if not conns:
            return
        now_ms = clock.now_ms()
        by_session: dict[tuple[str, str], list[Connection]] = defaultdict(list)
        for conn in conns:
            by_session[(conn.identity, conn.session_id)].append(conn)
        expired = [k for k, cs in by_session.items() if now_ms - cs[0].session.created_at_ms > self._max_age_ms]
        for identity, session_id in expired:
            self._sessions.end_session(identity, session_id, "tokenExpired")
        ended_by_age = set(expired)
        leases = [
            Lease(identity, session_id, cs[0].token_hash, tuple(conn.socket_id for conn in cs))
            for (identity, session_id), cs in by_session.items()
            if (identity, session_id) not in ended_by_age
        ]
        renewed = self._sessions.renew(leases, now_ms, self._presence_lease_ms)
        for lease, (alive, events) in zip(leases, renewed, strict=True):
            conns_of_session = by_session[(lease.identity, lease.session_id)]
            if not alive:
                reason = self._sessions.ended_reason(lease.identity, lease.session_id) or "tokenExpired"
                for conn in conns_of_session:
                    conn.terminate(reason)
            elif events is not None:
                # Also applies a subscription change whose notice this worker missed.
                for conn in conns_of_session:
                    conn.set_subscription(events)
        self._detach_closed(conns)

    def _detach_closed(self, conns: list[Connection]) -> None:
        """Take out of presence again the sockets that closed while the renewal was on its way.

        A socket that closed after the hub was read detached itself, and Redis may have run that
        before the renewal, which then counted it open again for a whole presence lease: its
        session's cap was a socket short and its calls woke no push while its device slept.
        """
        for conn in conns:
            if not self._hub.holds(conn):
                self._sessions.detach(conn.identity, conn.session_id, conn.socket_id)
