"""The one codec of a session's stored subscription: '*' for every event, else the event types joined by commas."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SUBSCRIBE_ALL = "*"


@dataclass(frozen=True)
class Subscription:
    """Which events a session receives: every subscribable one, or those listed (in the order given)."""

    subscribe_all: bool
    events: tuple[str, ...] = ()

    def encode(self) -> str:
        """Encode the subscription as the session hash stores it."""
        return SUBSCRIBE_ALL if self.subscribe_all else ",".join(dict.fromkeys(self.events))

    @classmethod
    def decode(cls, value: str) -> Subscription:
        """Decode a stored subscription."""
        if value == SUBSCRIBE_ALL:
            return cls(True)
        return cls(False, tuple(name for name in value.split(",") if name))

    def admits(self, subscribable: Iterable[str]) -> frozenset[str]:
        """Return the event types, of those subscribable, that the subscription lets through."""
        if self.subscribe_all:
            return frozenset(subscribable)
        return frozenset(self.events)
