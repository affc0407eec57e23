"""Store which identities each user owns."""

from __future__ import annotations

import redis

from vora.store import keys


class Directory:
    """Read and provision the user-to-identities directory in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def identities_of(self, subject: str) -> list[str]:
        """Return the identities a user owns, sorted, in one round trip."""
        members = self._redis.smembers(keys.user_identities(subject))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any

    def add(self, subject: str, identities: list[str]) -> int:
        """Give a user identities; return how many were new."""
        return int(self._redis.sadd(keys.user_identities(subject), *identities))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any

    def remove(self, subject: str, identities: list[str]) -> int:
        """Take identities from a user; return how many it had."""
        return int(self._redis.srem(keys.user_identities(subject), *identities))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any
