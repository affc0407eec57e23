"""The event bus: the notices the Lua scripts publish, their decoding, and the loop that reads them."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from vora.core.log_fields import error_fields
from vora.store import keys
from vora.store.client import REDIS_TROUBLE
from vora.store.codec import text
from vora.store.streams import StoredEvent

log = logging.getLogger("vora.store.bus")

Metric = Callable[[str, int], None]
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0


@dataclass(frozen=True)
class EventNotice:
    """An event PUBLISH_EVENT announced on the events channel."""

    identity: str
    event: StoredEvent


@dataclass(frozen=True)
class ControlNotice:
    """A session change a session script announced on the control channel."""

    identity: str
    action: str  # "terminate" or "subscription"
    sessions: frozenset[str]
    reason: str  # why the sessions ended (terminate)
    events: str  # the new subscription (subscription)


def decode_notice(channel: str, data: bytes | str) -> EventNotice | ControlNotice | None:
    """Decode what a script published on one of the bus channels; None for anything else."""
    try:
        notice = json.loads(data)
        identity = notice["identity"]
        if channel == keys.EVENTS_CHANNEL:
            event = StoredEvent(notice["id"], int(notice["seq"]), notice["type"], notice["ts"], notice["data"])
            return EventNotice(identity, event)
        if channel == keys.CONTROL_CHANNEL:
            return ControlNotice(
                identity,
                notice["action"],
                # cjson encodes an empty Lua table as {}: no sessions.
                frozenset(notice.get("sessions") or ()),
                notice.get("reason", "logout"),
                notice.get("events", ""),
            )
    except (TypeError, ValueError, KeyError):
        log.warning("bus notice not understood", extra={"fields": {"channel": channel}})
    return None


class BusListener(Protocol):
    """What the bus hands its notices to."""

    def on_event(self, notice: EventNotice) -> None:
        """Take an event notice; must not block."""
        ...

    def on_control(self, notice: ControlNotice) -> None:
        """Take a control notice; must not block."""
        ...

    def on_gap(self) -> None:
        """Learn that the subscription was lost for a while: notices published meanwhile never arrive."""
        ...


class EventBus:
    """Hold one subscription to both bus channels and hand every notice to a listener."""

    def __init__(self, client: redis.Redis, *, on_metric: Metric = lambda name, n: None) -> None:
        self._redis = client
        self._metric = on_metric
        self.subscribed = threading.Event()

    def listen_forever(self, listener: BusListener) -> None:
        """Read notices until the process ends, subscribing again (and telling the listener) after any failure."""
        backoff = BACKOFF_FIRST
        first = True
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call] # redis-py
            try:
                self._subscribe(pubsub)
                self.subscribed.set()
                if not first:
                    listener.on_gap()
                first = False
                backoff = BACKOFF_FIRST
                self._read(pubsub, listener)
            except Exception as exc:  # noqa: BLE001 - the worker's only reader must outlive any failure
                self.subscribed.clear()
                self._metric("redis_error", 1)
                log.warning(
                    "bus subscription lost",
                    extra={"fields": error_fields(exc)},
                    exc_info=not isinstance(exc, REDIS_TROUBLE),
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    @staticmethod
    def _subscribe(pubsub: Any) -> None:
        pubsub.subscribe(keys.EVENTS_CHANNEL, keys.CONTROL_CHANNEL)
        confirmed = 0
        while confirmed < 2:
            message = pubsub.get_message(timeout=1.0)
            if message and message["type"] == "subscribe":
                confirmed += 1

    def _read(self, pubsub: Any, listener: BusListener) -> None:
        while True:
            message = pubsub.get_message(timeout=1.0)
            if not message:
                continue
            channel = text(message["channel"])
            if message["type"] == "message":
                notice = decode_notice(channel, message["data"])
                if isinstance(notice, EventNotice):
                    self._metric("received", 1)
                    listener.on_event(notice)
                elif notice is not None:
                    listener.on_control(notice)
            elif message["type"] == "subscribe" and channel == keys.EVENTS_CHANNEL:
                # redis-py lost the connection and subscribed again on a new one by itself:
                # what was published in between never reached this worker.
                listener.on_gap()
