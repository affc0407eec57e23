"""Store each identity's events in a Redis Stream and read them back for sockets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

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


def _appended(result: Any) -> Appended:
    if len(result) == 2:
        return Appended(_text(result[0]), int(result[1]))
    return Appended(_text(result[0]), int(result[1]), bool(int(result[3])), _text(result[2]))


def stream_id_key(event_id: str) -> tuple[int, int]:
    """Order stream ids numerically."""
    millis, _, seq = event_id.partition("-")
    return int(millis), int(seq or 0)


@dataclass(frozen=True)
class Append:
    """One checked event to append, with the idempotency key (and fingerprint) it was offered under."""

    identity: str
    event_type: str
    timestamp: str
    data_json: str
    idempotency_key: str | None = None
    fingerprint: str = ""


@dataclass(frozen=True)
class Appended:
    """Where an event went; duplicate when its idempotency key had published it before."""

    event_id: str
    sequence_number: int
    duplicate: bool = False
    fingerprint: str = ""


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
        self._publish_once = client.register_script(scripts.PUBLISH_EVENT_ONCE)

    def _publish_args(self, identity: str, event_type: str, timestamp: str, data_json: str) -> list[Any]:
        return [
            event_type,
            timestamp,
            data_json,
            self._max_length,
            self._max_age_ms,
            self._sequence_ttl_ms,
            keys.EVENTS_CHANNEL,
            identity,
        ]

    @property
    def client(self) -> redis.Redis:
        """Return the Redis client the streams live in."""
        return self._redis

    def append(self, identity: str, event_type: str, timestamp: str, data_json: str) -> tuple[str, int]:
        """Append an event, trim by length and age, announce it; return its id and number."""
        result = self._publish(
            keys=[keys.event_stream(identity), keys.event_sequence(identity)],
            args=self._publish_args(identity, event_type, timestamp, data_json),
        )
        return _text(result[0]), int(result[1])

    def _script_call(self, event: Append, window_ms: int) -> tuple[Script, list[Any], list[Any]]:
        """Name the script, keys and args that append one event (at most once per idempotency key)."""
        args = self._publish_args(event.identity, event.event_type, event.timestamp, event.data_json)
        stream_keys = [keys.event_stream(event.identity), keys.event_sequence(event.identity)]
        if event.idempotency_key is None:
            return self._publish, stream_keys, args
        record = keys.idempotency(event.identity, event.idempotency_key)
        return self._publish_once, [*stream_keys, record], [*args, event.fingerprint, window_ms]

    def append_checked(self, event: Append, window_ms: int) -> Appended:
        """Append one event; with an idempotency key, a key seen within window_ms answers its first event."""
        script, script_keys, args = self._script_call(event, window_ms)
        return _appended(script(keys=script_keys, args=args))

    def append_many(self, events: Sequence[Append], window_ms: int) -> list[Appended | Exception]:
        """Append events in one round trip, one script call each (each identity may live on its own node).

        The calls are pipelined, not transactional: each result is the event's, or the error that
        refused it alone.
        """
        calls = [self._script_call(event, window_ms) for event in events]
        results: list[Any] = [NoScriptError()] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for index in pending:
                script, script_keys, args = calls[index]
                # EVALSHA directly: a pipeline that knows its scripts asks SCRIPT EXISTS on every execute.
                pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)
            for index, result in zip(pending, pipe.execute(raise_on_error=False), strict=True):
                results[index] = result
            pending = [index for index in pending if isinstance(results[index], NoScriptError)]
            if not pending or attempt:
                break
            # A restarted or failed-over Redis forgot the scripts; a NOSCRIPT item ran nothing.
            for script in {id(calls[index][0]): calls[index][0] for index in pending}.values():
                self._redis.script_load(script.script)
        return [result if isinstance(result, Exception) else _appended(result) for result in results]

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
