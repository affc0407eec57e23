"""Store which identities each user owns, and whether the directory was ever provisioned since Redis started empty."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from vora.store import keys, scripts
from vora.store.batching import CommandBatcher
from vora.store.codec import text


@dataclass(frozen=True)
class Replaced:
    """What replacing a user's identities changed."""

    added: list[str]
    removed: list[str]


class Directory:
    """Read and provision the user-to-identities directory in Redis."""

    def __init__(self, client: redis.Redis, batcher: CommandBatcher | None = None) -> None:
        self._redis = client
        self._batcher = batcher
        self._replace = client.register_script(scripts.REPLACE_IDENTITIES)

    def identities_of(self, subject: str) -> list[str]:
        """Return the identities a user owns, sorted, in one round trip."""
        key = keys.user_identities(subject)
        members = self._batcher.execute("SMEMBERS", key) if self._batcher else self._redis.smembers(key)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any

    def _mark_provisioned(self) -> None:
        # Before the user's set changes (another slot on Cluster, so not in its transaction): a set
        # written is never left without the marker that says the directory is provisioned.
        self._redis.set(keys.DIRECTORY_MARKER, str(int(time.time() * 1000)), nx=True)

    def add(self, subject: str, identities: list[str]) -> int:
        """Give a user identities; return how many were new."""
        self._mark_provisioned()
        return int(self._redis.sadd(keys.user_identities(subject), *identities))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any

    def remove(self, subject: str, identities: list[str]) -> int:
        """Take identities from a user; return how many it had."""
        self._mark_provisioned()
        return int(self._redis.srem(keys.user_identities(subject), *identities))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any

    def replace(self, subject: str, identities: list[str]) -> Replaced:
        """Make a user own exactly these identities, in one script; return what was added and removed."""
        self._mark_provisioned()
        reply = [text(item) for item in self._replace(keys=[keys.user_identities(subject)], args=identities)]
        split = reply.index("|")
        return Replaced(sorted(reply[:split]), sorted(reply[split + 1 :]))

    def provisioned_at(self, client: redis.Redis | None = None) -> int | None:
        """Return when the directory was first provisioned (ms since the epoch) since Redis last started empty.

        client: another client to ask (the readiness probe's, with its short timeout).
        """
        value = (client or self._redis).get(keys.DIRECTORY_MARKER)
        return None if value is None else int(text(value))
