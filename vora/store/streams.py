"""Store each identity's events in a Redis Stream and read them back for sockets."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from vora.core.settings import Settings
from vora.store import keys, scripts
from vora.store.batching import CommandBatcher
from vora.store.client import REDIS_ERRORS, is_unavailable, tracked_sends, tracks_sends, unavailable_write
from vora.store.codec import text

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


def event_from_entry(entry_id: Any, fields: dict[Any, Any]) -> StoredEvent:
    """Decode an XRANGE entry."""
    decoded = {text(k): text(v) for k, v in fields.items()}
    return StoredEvent(text(entry_id), int(decoded["seq"]), decoded["type"], decoded["ts"], decoded["data"])


Position = tuple[int, int]  # a stream id as (milliseconds, sequence number)

MAX_ID_PART = 2**64 - 1  # each half of a Redis stream id is an unsigned 64-bit integer
EVENT_ID = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})\Z")  # \Z: $ would take a trailing newline


def decimal_at_most(limit: int) -> str:
    """Return a regular expression (no anchors) for the decimals of at most len(str(limit)) digits up to limit."""
    digits = str(limit)
    width = len(digits)
    # Shorter numbers are all below the limit; one of its width is below it from the first digit it has lower.
    branches = [f"[0-9]{{1,{width - 1}}}"] if width > 1 else []
    for index, digit in enumerate(digits[:-1]):
        if digit != "0":
            lower = "0" if digit == "1" else f"[0-{int(digit) - 1}]"
            rest = width - index - 1
            branches.append(digits[:index] + lower + ("[0-9]" if rest == 1 else f"[0-9]{{{rest}}}"))
    last = int(digits[-1])
    branches.append(digits[:-1] + (f"[0-{last}]" if last else "0"))
    return "(?:" + "|".join(branches) + ")"


# The eventId pattern of the API documents: exactly what parse_event_id accepts, so that a fuzzer's
# "valid" id is one VORA takes (the looser [0-9]{1,20} let 20-digit parts over 2^64-1 through), in
# Python's regular expressions (Connexion's) as in ECMA 262's: (?!\n)$ refuses a trailing newline in both.
EVENT_ID_SCHEMA_PATTERN: Final = f"^{decimal_at_most(MAX_ID_PART)}-{decimal_at_most(MAX_ID_PART)}" + r"(?!\n)$"


def _appended(result: Any) -> Appended:
    if len(result) == 2:
        return Appended(text(result[0]), int(result[1]))
    return Appended(text(result[0]), int(result[1]), bool(int(result[3])), text(result[2]))


def stream_position(event_id: str) -> Position:
    """Order stream ids numerically."""
    millis, _, seq = event_id.partition("-")
    return int(millis), int(seq or 0)


def stream_id(position: Position) -> str:
    """Spell a position as the stream id it stands for."""
    return f"{position[0]}-{position[1]}"


def parse_event_id(value: str) -> Position | None:
    """Read a client's eventId, or None when it is not a stream id Redis could hold."""
    match = EVENT_ID.match(value)
    if match is None:
        return None
    position = int(match[1]), int(match[2])
    return position if max(position) <= MAX_ID_PART else None


def position_before(millis: int) -> Position:
    """Return the position just before every entry of a millisecond (an exclusive start)."""
    return millis - 1, MAX_ID_PART


class NotReplicated(RuntimeError):
    """An event is in the master's stream, but fewer replicas than asked confirmed it in time."""

    def __init__(self, event_id: str, sequence_number: int, acknowledged: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"event {event_id} (sequence {sequence_number}) is stored on the Redis master, but {acknowledged} of "
            f"the {wanted} replicas asked for confirmed it within {timeout_ms} ms; a master failover now may lose it"
        )
        self.event_id = event_id
        self.sequence_number = sequence_number
        self.acknowledged = acknowledged
        self.wanted = wanted


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

    after: Position | None  # exclusive start; None reads from the oldest retained event
    gap: bool
    oldest_id: str | None
    ahead: bool = False  # the client's position is after anything the stream ever held


def is_ahead(last_event: Position, newest_id: str | None, published: int | None, now_ms: int | None) -> bool:
    """Tell whether a client's last event is after every event the identity's stream has ever had.

    newest_id is the stream's newest entry, published its sequence counter, now_ms Redis' clock
    (which stamps the next ids): an id past all of them was never handed out here. With entries in
    the stream, the newest alone decides: after a Redis that lost the stream and its counter (an
    empty restart, a failover that lost writes) the sequence numbers start again, and a client's
    older id may carry a larger one than the counter while the events published since all follow
    it; taken as ahead, the resume would start after them and skip them all.
    """
    if newest_id is not None:
        return last_event > stream_position(newest_id)
    if published is not None and last_event[1] > published:
        return True
    return now_ms is not None and last_event[0] > now_ms


def resume_point(
    last_event: Position,
    oldest_id: str | None,
    published: int | None,
    newest_id: str | None = None,
    now_ms: int | None = None,
) -> ResumePoint:
    """Tell where to resume after a client's last event and whether events after it were trimmed.

    oldest_id and newest_id are the stream's oldest and newest retained entries, published the
    identity's sequence counter, now_ms Redis' clock. A last event from the future (after all of
    them) resumes after the newest entry, with the next event published: filtering on it would
    drop every event until the stream caught up with it.
    """
    if is_ahead(last_event, newest_id, published, now_ms):
        return ResumePoint(stream_position(newest_id) if newest_id is not None else None, True, oldest_id, True)
    last_sequence = last_event[1]
    if oldest_id is not None:
        if stream_position(oldest_id)[1] > last_sequence + 1:
            return ResumePoint(None, True, oldest_id)
        return ResumePoint(last_event, False, oldest_id)
    if published is not None and published > last_sequence:
        return ResumePoint(None, True, None)  # the whole stream aged out after the client's event
    return ResumePoint(last_event, False, None)


class StreamStore:
    """Append events atomically and read them in pages."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        max_length: int,
        max_age_seconds: int,
        min_replicas: int = 0,
        replica_timeout_ms: int = 500,
        batcher: CommandBatcher | None = None,
    ) -> None:
        self._redis = client
        # Concurrent publishes of a worker share round trips (not with WAIT, which must follow its own write).
        self._batcher = batcher if not min_replicas else None
        self._min_replicas = min_replicas
        self._replica_timeout_ms = replica_timeout_ms
        self._max_length = max_length
        self._max_age_ms = max_age_seconds * 1000
        self._sequence_ttl_ms = max(MIN_SEQUENCE_TTL_MS, 2 * self._max_age_ms)
        self._publish = client.register_script(scripts.PUBLISH_EVENT)
        self._publish_once = client.register_script(scripts.PUBLISH_EVENT_ONCE)
        self._tracks_sends = tracks_sends(client)

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

    @classmethod
    def from_settings(
        cls, client: redis.Redis, settings: Settings, batcher: CommandBatcher | None = None
    ) -> StreamStore:
        """Build the store with the retention and replication the settings ask for."""
        return cls(
            client,
            max_length=settings.stream_max_length,
            max_age_seconds=settings.stream_max_age,
            min_replicas=settings.publish_replicas,
            replica_timeout_ms=settings.publish_replica_timeout,
            batcher=batcher,
        )

    @property
    def client(self) -> redis.Redis:
        """Return the Redis client the streams live in."""
        return self._redis

    def append(self, identity: str, event_type: str, timestamp: str, data_json: str) -> tuple[str, int]:
        """Append an event, trim by length and age, announce it; return its id and number.

        With min_replicas, also wait for that many replicas to confirm it, raising NotReplicated
        (the event stays in the stream) when fewer do within the timeout.
        """
        script_keys = [keys.event_stream(identity), keys.event_sequence(identity)]
        script_args = self._publish_args(identity, event_type, timestamp, data_json)
        if not self._min_replicas:
            result = self._publish(keys=script_keys, args=script_args)
            return text(result[0]), int(result[1])
        # WAIT counts the replicas that have the writes of its own connection, so it must travel on
        # the script's connection: a non-transactional pipeline sends both on one.
        pipe = self._redis.pipeline(transaction=False)
        self._publish(keys=script_keys, args=script_args, client=pipe)
        pipe.execute_command("WAIT", self._min_replicas, self._replica_timeout_ms)  # type: ignore[no-untyped-call] # redis-py leaves Pipeline.execute_command untyped
        result, acknowledged = pipe.execute()
        event_id, sequence = text(result[0]), int(result[1])
        self._check_replicated(event_id, sequence, acknowledged)
        return event_id, sequence

    def _check_replicated(self, event_id: str, sequence: int, acknowledged: Any) -> None:
        """Raise NotReplicated when WAIT saw fewer replicas confirm the connection's writes than asked."""
        if int(acknowledged) < self._min_replicas:
            raise NotReplicated(event_id, sequence, int(acknowledged), self._min_replicas, self._replica_timeout_ms)

    def _script_call(self, event: Append, window_ms: int) -> tuple[Script, list[Any], list[Any]]:
        """Name the script, keys and args that append one event (at most once per idempotency key)."""
        args = self._publish_args(event.identity, event.event_type, event.timestamp, event.data_json)
        stream_keys = [keys.event_stream(event.identity), keys.event_sequence(event.identity)]
        if event.idempotency_key is None:
            return self._publish, stream_keys, args
        record = keys.idempotency(event.identity, event.idempotency_key)
        return self._publish_once, [*stream_keys, record], [*args, event.fingerprint, window_ms]

    def append_checked(self, event: Append, window_ms: int) -> Appended:
        """Append one event; with an idempotency key, a key seen within window_ms answers its first event.

        When Redis is unavailable or refuses the write for now (full, busy), raise NotWritten (nothing
        was written) or WriteOutcomeUnknown (the script may have run: only a retry under the same
        idempotency key is safe).
        """
        with tracked_sends() as sends:
            try:
                return self._append_checked(event, window_ms)
            except REDIS_ERRORS as exc:
                if not is_unavailable(exc):
                    raise
                raise unavailable_write(exc, sends, self._tracks_sends) from exc

    def _append_checked(self, event: Append, window_ms: int) -> Appended:
        script, script_keys, args = self._script_call(event, window_ms)
        if self._batcher is not None:
            try:
                return _appended(self._batcher.execute("EVALSHA", script.sha, len(script_keys), *script_keys, *args))
            except NoScriptError:
                pass  # a restarted or new master ran nothing: the script call below loads it
        if not self._min_replicas:
            return _appended(script(keys=script_keys, args=args))
        pipe = self._redis.pipeline(transaction=False)
        script(keys=script_keys, args=args, client=pipe)
        pipe.execute_command("WAIT", self._min_replicas, self._replica_timeout_ms)  # type: ignore[no-untyped-call] # redis-py leaves Pipeline.execute_command untyped
        result, acknowledged = pipe.execute()
        appended = _appended(result)
        if not appended.duplicate:
            self._check_replicated(appended.event_id, appended.sequence_number, acknowledged)
        return appended

    def append_many(self, events: Sequence[Append], window_ms: int) -> list[Appended | Exception]:
        """Append events in one round trip, one script call each (each identity may live on its own node).

        The calls are pipelined, not transactional: each result is the event's, or the error that
        refused it alone. When Redis is unavailable, raise NotWritten or WriteOutcomeUnknown for the
        whole batch, as append_checked does.
        """
        with tracked_sends() as sends:
            try:
                return self._append_many(events, window_ms)
            except REDIS_ERRORS as exc:
                if not is_unavailable(exc):
                    raise
                raise unavailable_write(exc, sends, self._tracks_sends) from exc

    def _append_many(self, events: Sequence[Append], window_ms: int) -> list[Appended | Exception]:
        calls = [self._script_call(event, window_ms) for event in events]
        acknowledged: Any = self._min_replicas
        results: list[Any] = [NoScriptError()] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for index in pending:
                script, script_keys, args = calls[index]
                # EVALSHA directly: a pipeline that knows its scripts asks SCRIPT EXISTS on every execute. And
                # as a command, not pipe.evalsha(), which redis-py's cluster pipeline refuses to queue at all
                # (every batch on Cluster was a 503); as a command it is routed by its keys' slot like any other.
                pipe.execute_command("EVALSHA", script.sha, len(script_keys), *script_keys, *args)  # type: ignore[no-untyped-call] # redis-py leaves Pipeline.execute_command untyped
            if self._min_replicas:
                pipe.execute_command("WAIT", self._min_replicas, self._replica_timeout_ms)  # type: ignore[no-untyped-call] # redis-py leaves Pipeline.execute_command untyped
            answers = pipe.execute(raise_on_error=False)
            if self._min_replicas:
                acknowledged = answers.pop()
            for index, result in zip(pending, answers, strict=True):
                results[index] = result
            pending = [index for index in pending if isinstance(results[index], NoScriptError)]
            if not pending or attempt:
                break
            # A restarted or failed-over Redis forgot the scripts; a NOSCRIPT item ran nothing.
            for script in {id(calls[index][0]): calls[index][0] for index in pending}.values():
                self._redis.script_load(script.script)
        appended = [result if isinstance(result, Exception) else _appended(result) for result in results]
        if self._min_replicas:
            written = [a for a in appended if isinstance(a, Appended) and not a.duplicate]
            if written and (isinstance(acknowledged, Exception) or int(acknowledged) < self._min_replicas):
                return [self._unconfirmed(a, acknowledged) for a in appended]
        return appended

    def _unconfirmed(self, appended: Appended | Exception, acknowledged: Any) -> Appended | Exception:
        """Turn a written item of a batch whose WAIT fell short into its NotReplicated error."""
        if isinstance(appended, Exception) or appended.duplicate:
            return appended
        confirmed = 0 if isinstance(acknowledged, Exception) else int(acknowledged)
        return NotReplicated(
            appended.event_id, appended.sequence_number, confirmed, self._min_replicas, self._replica_timeout_ms
        )

    def read_after(self, identity: str, after: Position | None, count: int) -> list[StoredEvent]:
        """Read up to count events after a position (exclusive), or from the oldest when None."""
        if after == (MAX_ID_PART, MAX_ID_PART):
            return []  # nothing can follow the largest id, and Redis refuses an exclusive range after it
        start = "-" if after is None else f"({stream_id(after)}"
        entries = self._redis.xrange(keys.event_stream(identity), min=start, max="+", count=count)
        return [event_from_entry(entry_id, fields) for entry_id, fields in entries]  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any

    def newest(self, identity: str) -> Position | None:
        """Return the position of the newest retained event, if any."""
        entries = self._redis.xrevrange(keys.event_stream(identity), count=1)
        return stream_position(text(entries[0][0])) if entries else None  # type: ignore[index] # redis-py types sync replies as Awaitable | Any
