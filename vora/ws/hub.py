"""One hub per worker: a single Redis subscription fanned out to every local socket."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis

from vora.store import keys
from vora.store.client import REDIS_TROUBLE
from vora.store.sessions import Lease, SessionStore
from vora.store.streams import stream_id_key
from vora.ws.connection import Connection

log = logging.getLogger("vora.ws.hub")

Metric = Callable[[str, int], None]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Hub:
    """Route events and control notices from Redis to this worker's connections."""

    def __init__(
        self,
        client: redis.Redis,
        sessions: SessionStore,
        session_ttl_ms: int,
        session_max_age_ms: int,
        lease_interval: float,
        on_metric: Metric = lambda name, n: None,
    ) -> None:
        self._redis = client
        self._sessions = sessions
        self._ttl_ms = session_ttl_ms
        self._max_age_ms = session_max_age_ms
        self._lease_interval = lease_interval
        self._metric = on_metric
        self._by_identity: dict[str, set[Connection]] = defaultdict(set)
        self._lock = threading.Lock()
        self._started = False
        self._subscribed = threading.Event()
        self._renew_now = threading.Event()
        self._stopping = False
        self.draining = False

    @property
    def presence_lease_ms(self) -> int:
        """Return how long a socket counts as open after its last renewal: three lease intervals."""
        return int(self._lease_interval * 3000)

    # Registry.

    def register(self, conn: Connection) -> None:
        """Start routing events of the connection's identity to it."""
        self._by_identity[conn.identity].add(conn)
        self._metric("open", 1)

    def unregister(self, conn: Connection) -> None:
        """Stop routing events to a closed connection."""
        conns = self._by_identity.get(conn.identity)
        if conns is not None and conn in conns:
            conns.discard(conn)
            self._metric("open", -1)
            if not conns:
                del self._by_identity[conn.identity]

    def connections(self) -> list[Connection]:
        """List every open connection."""
        return [conn for conns in list(self._by_identity.values()) for conn in list(conns)]

    # Lifecycle.

    def ensure_started(self, timeout: float) -> bool:
        """Start the reader and lease greenlets once, and wait until the subscription is live."""
        with self._lock:
            if not self._started:
                self._started = True
                threading.Thread(target=self._read_forever, name="vora-hub-reader", daemon=True).start()
                threading.Thread(target=self._lease_forever, name="vora-hub-lease", daemon=True).start()
        return self._subscribed.wait(timeout)

    def drain(self) -> None:
        """Tell every socket this instance is going away; never blocks (it may run in a signal handler)."""
        self.draining = True
        for conn in self.connections():
            conn.terminate("maintenance")

    # Reading Redis.

    def _read_forever(self) -> None:
        backoff = 0.05
        first = True
        while not self._stopping:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(keys.EVENTS_CHANNEL, keys.CONTROL_CHANNEL)
                confirmed = 0
                while confirmed < 2:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "subscribe":
                        confirmed += 1
                self._subscribed.set()
                if not first:
                    self._resync_all()
                first = False
                backoff = 0.05
                while not self._stopping:
                    message = pubsub.get_message(timeout=1.0)
                    if not message:
                        continue
                    if message["type"] == "message":
                        self._dispatch(message)
                    elif message["type"] == "subscribe" and _text(message["channel"]) == keys.EVENTS_CHANNEL:
                        # redis-py lost the connection and subscribed again on a new one by itself:
                        # what was published in between never reached this worker.
                        self._resync_all()
            except Exception as exc:  # noqa: BLE001 - the worker's only reader must outlive any failure
                self._subscribed.clear()
                self._metric("redis_error", 1)
                log.warning(
                    "hub lost its subscription",
                    extra={"fields": {"error": type(exc).__name__}},
                    exc_info=not isinstance(exc, REDIS_TROUBLE),
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def _resync_all(self) -> None:
        """Make every connection re-read its stream: the subscription had a gap."""
        self._metric("reconnect", 1)
        for conn in self.connections():
            conn.resync()
        # Control notices were missed too: re-read every session's state now, not at the next lease.
        self._renew_now.set()

    def _dispatch(self, message: dict[str, Any]) -> None:
        try:
            notice = json.loads(message["data"])
        except (TypeError, ValueError):
            return
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if channel == keys.EVENTS_CHANNEL:
            self._metric("received", 1)
        conns = self._by_identity.get(notice.get("identity", ""))
        if not conns:
            return
        if channel == keys.EVENTS_CHANNEL:
            self._fan_out(conns, notice)
        elif notice.get("action") == "terminate":
            ended = set(notice.get("sessions", ()))
            for conn in list(conns):
                if conn.session_id in ended:
                    conn.terminate(notice.get("reason", "logout"))
        elif notice.get("action") == "subscription":
            updated = set(notice.get("sessions", ()))
            for conn in list(conns):
                if conn.session_id in updated:
                    conn.set_subscription(notice.get("events", ""))

    def _fan_out(self, conns: set[Connection], notice: dict[str, Any]) -> None:
        event_type = notice["type"]
        envelope = {
            "eventId": notice["id"],
            "sequenceNumber": notice["seq"],
            "identity": notice["identity"],
            "type": event_type,
            "timestamp": notice["ts"],
            "data": json.loads(notice["data"]),
        }
        payload = json.dumps(envelope)  # serialised and positioned once, for every socket
        position = stream_id_key(notice["id"])
        for conn in list(conns):
            conn.offer(notice["id"], position, event_type, payload)

    # Keeping sessions alive while their sockets are open.

    def _lease_forever(self) -> None:
        while not self._stopping:
            self._renew_now.wait(self._lease_interval)
            self._renew_now.clear()
            try:
                self.renew_leases()
            except Exception as exc:  # noqa: BLE001 - open sessions must keep being renewed after any failure
                self._metric("redis_error:lease", 1)
                log.warning(
                    "lease renewal failed",
                    extra={"fields": {"error": type(exc).__name__}},
                    exc_info=not isinstance(exc, REDIS_TROUBLE),
                )

    def renew_leases(self) -> None:
        """Extend the TTL of every session with an open socket, re-read its subscription, close those that ended."""
        conns = self.connections()
        if not conns:
            return
        now_ms = int(time.time() * 1000)
        by_session: dict[tuple[str, str], list[Connection]] = defaultdict(list)
        for conn in conns:
            by_session[(conn.identity, conn.session_id)].append(conn)
        expired = [k for k, cs in by_session.items() if now_ms - cs[0].session.created_at_ms > self._max_age_ms]
        for identity, session_id in expired:
            self._sessions.end_session(identity, session_id, "tokenExpired")
        ended_by_age = set(expired)
        live = [k for k in by_session if k not in ended_by_age]
        leases = [
            Lease(identity, session_id, cs[0].token_hash, tuple(conn.socket_id for conn in cs))
            for (identity, session_id), cs in ((k, by_session[k]) for k in live)
        ]
        renewed = self._sessions.renew(leases, now_ms, self.presence_lease_ms)
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
