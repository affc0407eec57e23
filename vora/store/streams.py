"""Store each identity's events in a Redis Stream and read them back for sockets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from vora.store import keys, scripts

# The sequence counter outlives the stream so that numbers never restart while a
# client may still remember one.
MIN_SEQUENCE_TTL_MS = 30 * 24 * 3600 * 1000


@dataclass(frozen=True)
class StoredEvent:
    """One entry of an identity's stream."""

    event_id: str
    sequence_number: int
    event_type: str
    timestamp: str
    data_json: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def event_from_entry(entry_id: Any, fields: dict[Any, Any]) -> StoredEvent:
    """Decode an XRANGE entry."""
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    return StoredEvent(_text(entry_id), int(decoded["seq"]), decoded["type"], decoded["ts"], decoded["data"])


def stream_id_key(event_id: str) -> tuple[int, int]:
    """Order stream ids numerically."""
    millis, _, seq = event_id.partition("-")
    return int(millis), int(seq or 0)


@dataclass(frozen=True)
class ResumePoint:
    """Where a resuming socket starts reading, and whether events were lost before it."""

    after_id: str | None  # exclusive start; None reads from the oldest retained event
    gap: bool
    oldest_id: str | None


class StreamStore:
    """Append events atomically and read them in pages."""

    def __init__(self, client: redis.Redis, max_length: int, max_age_seconds: int) -> None:
        self._redis = client
        self._max_length = max_length
        self._max_age_ms = max_age_seconds * 1000
        self._sequence_ttl_ms = max(MIN_SEQUENCE_TTL_MS, 2 * self._max_age_ms)
        self._publish = client.register_script(scripts.PUBLISH_EVENT)

    @property
    def client(self) -> redis.Redis:
        """Return the Redis client the streams live in."""
        return self._redis

    def append(self, identity: str, event_type: str, timestamp: str, data_json: str) -> tuple[str, int]:
        """Append an event, trim by length and age, announce it; return its id and number."""
        result = self._publish(
            keys=[keys.event_stream(identity), keys.event_sequence(identity)],
            args=[
                event_type,
                timestamp,
                data_json,
                self._max_length,
                self._max_age_ms,
                self._sequence_ttl_ms,
                keys.EVENTS_CHANNEL,
                identity,
            ],
        )
        return _text(result[0]), int(result[1])

    def read_after(self, identity: str, after_id: str | None, count: int) -> list[StoredEvent]:
        """Read up to count events after an id (exclusive), or from the oldest when None."""
        start = "-" if after_id is None else f"({after_id}"
        entries = self._redis.xrange(keys.event_stream(identity), min=start, max="+", count=count)
        return [event_from_entry(entry_id, fields) for entry_id, fields in entries]  # type: ignore[union-attr]

    def last_id(self, identity: str) -> str | None:
        """Return the id of the newest retained event, if any."""
        entries = self._redis.xrevrange(keys.event_stream(identity), count=1)
        return _text(entries[0][0]) if entries else None  # type: ignore[index]

    def resume_point(self, identity: str, last_event_id: str) -> ResumePoint:
        """Tell where to resume after last_event_id and whether events after it were trimmed."""
        last_sequence = stream_id_key(last_event_id)[1]
        oldest = self._redis.xrange(keys.event_stream(identity), count=1)
        if oldest:
            oldest_id = _text(oldest[0][0])  # type: ignore[index]
            if stream_id_key(oldest_id)[1] > last_sequence + 1:
                return ResumePoint(None, True, oldest_id)
            return ResumePoint(last_event_id, False, oldest_id)
        published = self._redis.get(keys.event_sequence(identity))
        if published is not None and int(published) > last_sequence:  # type: ignore[arg-type]
            return ResumePoint(None, True, None)  # the whole stream aged out after the client's event
        return ResumePoint(last_event_id, False, None)
