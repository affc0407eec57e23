"""Store which identities each user owns."""

from __future__ import annotations

import redis

from vora.store import keys
from vora.store.batching import CommandBatcher


class Directory:
    """Read and provision the user-to-identities directory in Redis."""

    def __init__(self, client: redis.Redis, batcher: CommandBatcher | None = None) -> None:
        self._redis = client
        self._batcher = batcher

    def identities_of(self, subject: str) -> list[str]:
        """Return the identities a user owns, sorted, in one round trip."""
        key = keys.user_identities(subject)
        members = self._batcher.execute("SMEMBERS", key) if self._batcher else self._redis.smembers(key)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any

    def add(self, subject: str, identities: list[str]) -> int:
        """Give a user identities; return how many were new."""
        return int(self._redis.sadd(keys.user_identities(subject), *identities))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any

    def remove(self, subject: str, identities: list[str]) -> int:
        """Take identities from a user; return how many it had."""
        return int(self._redis.srem(keys.user_identities(subject), *identities))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any
