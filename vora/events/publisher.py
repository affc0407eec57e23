"""Event rules: the payload schema of each type, validation, and the envelope clients see."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vora.core.catalog import LIFECYCLE_EVENTS, SUBSCRIBABLE_EVENTS, Family
from vora.core.clock import utc_timestamp
from vora.core.error_shape import clip
from vora.core.identities import is_identity
from vora.core.log_fields import error_fields
from vora.http.fast_path import acceptance_check
from vora.http.validation import rule_message
from vora.observability.metrics import EVENTS_PUBLISHED, REDIS_FAILURES
from vora.push.rules import is_terminating_call
from vora.store.client import REDIS_TROUBLE
from vora.store.push import PushStore
from vora.store.streams import Append, Appended, NotReplicated, StoredEvent, StreamStore, stream_position

log = logging.getLogger("vora.events")

ASYNCAPI_FILE = "vora-events.asyncapi.yaml"
# How long a wake-up that could not be queued with its event is retried: a ringing call waits no
# longer for its device (VORA_HOLDUP_TIMEOUT's default), and the push worker drops older jobs anyway.
WAKE_UP_RETRY_SECONDS = 30.0
MAX_DATA_BYTES = 8 * 1024

# The AsyncAPI schema that describes the `data` of each family or lifecycle event.
DATA_SCHEMAS: dict[str, str] = {
    Family.CALL.value: "CallData",
    Family.PRESENCE.value: "PresenceData",
    Family.RECORDING.value: "RecordingData",
    "heartbeat": "HeartbeatData",
    "channelTerminated": "ChannelTerminatedData",
    "resumeGap": "ResumeGapData",
    "channelOpened": "ChannelOpenedData",
}


class InvalidEvent(ValueError):
    """An event a publisher offered that the catalogue refuses."""


@cache
def load_asyncapi(spec_dir: Path) -> dict[str, Any]:
    """Load the AsyncAPI document once per process."""
    document: dict[str, Any] = yaml.safe_load((spec_dir / ASYNCAPI_FILE).read_text())
    return document


def inline_refs(schema: Any, schemas: dict[str, Any]) -> Any:
    """Replace every `#/components/schemas/...` reference in a (non-recursive) schema by its target."""
    if isinstance(schema, list):
        return [inline_refs(item, schemas) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return inline_refs(schemas[schema["$ref"].rsplit("/", 1)[1]], schemas)
    return {key: inline_refs(value, schemas) for key, value in schema.items()}


def data_schema_name(event_type: str) -> str:
    """Name the AsyncAPI schema of an event type's data."""
    family = SUBSCRIBABLE_EVENTS.get(event_type)
    return DATA_SCHEMAS[family.value if family else event_type]


class EventCatalog:
    """Validate event payloads against the AsyncAPI document's schemas.

    first_checks holds each publishable type's quick check, which passes only payloads its schema accepts.
    """

    def __init__(self, spec_dir: Path) -> None:
        schemas = load_asyncapi(spec_dir)["components"]["schemas"]
        # Inlined once (Draft 7 ignores a $ref's siblings, as inlining drops them): resolving each $ref
        # on every event cost more than the rest of its checks.
        inlined = {
            event_type: inline_refs(schemas[data_schema_name(event_type)], schemas)
            for event_type in (*SUBSCRIBABLE_EVENTS, *LIFECYCLE_EVENTS)
        }
        self._validators = {
            event_type: jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
            for event_type, schema in inlined.items()
        }
        # A good payload passes on jsonschema_rs's verdict (about 40 times faster: a twentieth of a publish's CPU);
        # one it refuses is asked of jsonschema, which alone decides and words the refusal.
        self.first_checks: dict[str, Callable[[Any], bool]] = {
            event_type: acceptance_check(inlined[event_type], self._validators[event_type])
            for event_type in SUBSCRIBABLE_EVENTS
        }

    def check(self, event_type: str, data: Any) -> None:
        """Raise InvalidEvent unless the type is publishable and the data fits its schema."""
        if event_type not in SUBSCRIBABLE_EVENTS:
            raise InvalidEvent(f"unknown event type {clip(event_type)!r}; known: {', '.join(SUBSCRIBABLE_EVENTS)}")
        if self.first_checks[event_type](data):
            return
        validator = self._validators[event_type]
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "data"
            raise InvalidEvent(f"{event_type} data is invalid at {where}: {rule_message(error)}")


@dataclass(frozen=True)
class PublishedEvent:
    """What publishing returned: the event's id and number, and its envelope."""

    event_id: str
    sequence_number: int
    envelope: dict[str, Any]


def _is_rfc3339(value: str) -> bool:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None and "T" in value


def surrogate_path(data: Any) -> str:
    """Name where in a JSON value the first string (value or key) with a lone surrogate is: a/b/0, or "data"."""
    pending: list[tuple[Any, str]] = [(data, "")]
    while pending:
        value, path = pending.pop(0)
        if isinstance(value, str) and not value.isascii() and not _encodes(value):
            return path or "data"
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in children:
            where = f"{path}/{key}" if path else str(key)
            if isinstance(key, str) and not _encodes(key):
                return where
            pending.append((child, where))
    return "data"


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def stream_envelope(identity: str, event: StoredEvent) -> dict[str, Any]:
    """Build the envelope of a stream event."""
    return {
        "eventId": event.event_id,
        "sequenceNumber": event.sequence_number,
        "identity": identity,
        "type": event.event_type,
        "timestamp": event.timestamp,
        "data": json.loads(event.data_json),
    }


def lifecycle_envelope(identity: str, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Build the envelope of an event VORA sends to one socket."""
    return {
        "eventId": None,
        "sequenceNumber": None,
        "identity": identity,
        "type": event_type,
        "timestamp": utc_timestamp(),
        "data": data,
    }


def fingerprint(event_type: str, data: Any, timestamp: str | None) -> str:
    """Hash an event as the publisher offered it, so that a retry matches whatever its key order."""
    canonical = json.dumps([event_type, data, timestamp], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class WakeUp:
    """A push wake-up to queue: the stored event it is for, the idempotency window it is queued once in, the job."""

    event: Append
    event_id: str
    window_ms: int | None
    job: dict[str, str | int]


class EventPublisher:
    """Publish events (plain, once per idempotency key, batched): checked, appended, counted, wake-ups queued."""

    def __init__(
        self,
        catalog: EventCatalog,
        streams: StreamStore,
        push_jobs: PushStore | None = None,
        wake_up_retry_seconds: float = WAKE_UP_RETRY_SECONDS,
    ) -> None:
        self._catalog = catalog
        self._streams = streams
        self._push_jobs = push_jobs if push_jobs is not None else PushStore(streams.client)
        self._wake_up_retry_seconds = wake_up_retry_seconds
        # Wake-ups whose queueing failed, oldest first, each with the moment it is given up.
        self._retrying: deque[tuple[WakeUp, float]] = deque()
        self._retry_lock = threading.Lock()
        self._retrier: threading.Thread | None = None

    def checked(self, identity: str, event_type: str, data: Any, timestamp: str | None = None) -> Append:
        """Check an event and return it ready to append (stamped now when it has no timestamp)."""
        if not is_identity(identity):
            raise InvalidEvent(f"{clip(identity)!r} is not an identity (see the Identity pattern in spec/vora.yaml)")
        if timestamp is not None and not _is_rfc3339(timestamp):
            raise InvalidEvent(f"timestamp {clip(timestamp)!r} is not an RFC 3339 date-time")
        self._catalog.check(event_type, data)
        data_json = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        try:
            encoded = data_json.encode()
        except UnicodeEncodeError:
            where = surrogate_path(data)
            raise InvalidEvent(
                f"{event_type} data is invalid at {where}: a string holds a lone UTF-16 surrogate (half of a pair, "
                "as a text cut inside an emoji has), which is no Unicode character; send whole characters"
            ) from None
        if len(encoded) > MAX_DATA_BYTES:
            raise InvalidEvent(f"{event_type} data is larger than {MAX_DATA_BYTES} bytes")
        return Append(identity, event_type, timestamp or utc_timestamp(), data_json)

    def publish(self, identity: str, event_type: str, data: Any, timestamp: str | None = None) -> PublishedEvent:
        """Publish one event; nothing is written when it is refused."""
        event = self.checked(identity, event_type, data, timestamp)
        try:
            event_id, sequence = self._streams.append(identity, event_type, event.timestamp, event.data_json)
        except NotReplicated as exc:
            # The event is in the stream and on its way to sockets: what follows the append still happens.
            self._announce(event, data, exc.event_id)
            raise
        self._announce(event, data, event_id)
        stored = StoredEvent(event_id, sequence, event_type, event.timestamp, event.data_json)
        return PublishedEvent(event_id, sequence, stream_envelope(identity, stored))

    def publish_once(self, event: Append, data: Any, window_ms: int) -> Appended:
        """Publish one checked event, or answer what its idempotency key published within window_ms."""
        try:
            appended = self._streams.append_checked(event, window_ms)
        except NotReplicated as exc:
            # Stored and on its way to sockets: what follows a publish still happens before the caller hears.
            self._announce(event, data, exc.event_id, window_ms)
            raise
        if appended.duplicate:
            self._queue_wake_up(event, data, appended.event_id, window_ms)
        else:
            self._announce(event, data, appended.event_id, window_ms)
        return appended

    def publish_many(self, events: Sequence[tuple[Append, Any]], window_ms: int) -> list[Appended | Exception]:
        """Publish checked events (each with its data) in one round trip; answer each one's result or error."""
        results = self._streams.append_many([event for event, _ in events], window_ms)
        deferred: list[WakeUp] = []
        for (event, data), result in zip(events, results, strict=True):
            if isinstance(result, NotReplicated) or (isinstance(result, Appended) and not result.duplicate):
                self._announce(event, data, result.event_id, window_ms, deferred)
            elif isinstance(result, Appended):
                self._queue_wake_up(event, data, result.event_id, window_ms, deferred)
        if deferred:
            self._retry_later(deferred)
        return results

    def _announce(
        self,
        event: Append,
        data: Any,
        event_id: str,
        window_ms: int | None = None,
        deferred: list[WakeUp] | None = None,
    ) -> None:
        """Count a newly stored event and queue the push wake-up it may need: once per event, whichever path."""
        EVENTS_PUBLISHED.labels(event.event_type).inc()
        self._queue_wake_up(event, data, event_id, window_ms, deferred)

    def _queue_wake_up(
        self, event: Append, data: Any, event_id: str, window_ms: int | None, deferred: list[WakeUp] | None = None
    ) -> None:
        """Queue the push wake-up an incoming call may need; under an idempotency key, once per event in its window.

        A keyed retry answered as a duplicate asks again: the first try's script may have run without
        its caller hearing, and then nothing queued the job. The marker the queueing script sets makes
        the ask a no-op when the first try did queue it. A batch passes `deferred`: once one of its
        wake-ups failed, the rest join it there unsent, so that a down queue costs the batch one failure.
        """
        if not is_terminating_call(event.event_type, data):
            return
        # The push worker decides whether a device needs waking.
        job: dict[str, str | int] = {
            "identity": event.identity,
            "callId": data["callId"],
            "caller": data.get("from", ""),
            "eventId": event_id,
            "ringAt": stream_position(event_id)[0],
        }
        wake_up = WakeUp(event, event_id, window_ms, job)
        if deferred:
            deferred.append(wake_up)
            return
        try:
            self._enqueue(wake_up)
        except REDIS_TROUBLE as exc:
            # The event is stored and on its way to sockets: its publish succeeded, and failing it now
            # would have the publisher retry (and, without a key, publish it twice). The job is retried
            # in the background instead (on Cluster, the queue's slot may be on a node that is down).
            log.warning("push wake-up not queued; retrying", extra={"fields": error_fields(exc)})
            REDIS_FAILURES.labels("push").inc()
            if deferred is None:
                self._retry_later([wake_up])
            else:
                deferred.append(wake_up)

    def _enqueue(self, wake_up: WakeUp) -> None:
        event, job = wake_up.event, wake_up.job
        if event.idempotency_key is None or wake_up.window_ms is None:
            self._push_jobs.enqueue("ring", **job)
        else:
            self._push_jobs.enqueue_once(event.identity, wake_up.event_id, wake_up.window_ms, "ring", **job)

    def _retry_later(self, wake_ups: list[WakeUp]) -> None:
        """Hand wake-ups to the one background retrier, which tries each until its retry time is over; never blocks."""
        give_up_at = time.monotonic() + self._wake_up_retry_seconds
        with self._retry_lock:
            self._retrying.extend((wake_up, give_up_at) for wake_up in wake_ups)
            if self._retrier is None:
                # One retrier for all: a queue down for its whole retry time under a steady call rate must not
                # make a thread (a greenlet under gevent), each with its own connection attempts, per publish.
                self._retrier = threading.Thread(target=self._retry, name="vora-wake-up-retry", daemon=True)
                self._retrier.start()

    def _retry(self) -> None:
        delay = 0.05
        failure: dict[str, str] = {}
        while True:
            time.sleep(delay)
            with self._retry_lock:
                now = time.monotonic()
                expired = 0
                while self._retrying and self._retrying[0][1] < now:
                    self._retrying.popleft()
                    expired += 1
                if not self._retrying:
                    self._retrier = None
                    pending = None
                else:
                    pending = self._retrying[0][0]
            if expired:
                log.warning(
                    "push wake-up not queued; given up", extra={"fields": {**failure, "wake_ups": str(expired)}}
                )
            if pending is None:
                return
            try:
                self._enqueue(pending)
            except REDIS_TROUBLE as exc:
                failure = error_fields(exc)
                REDIS_FAILURES.labels("push").inc()
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.0  # the queue takes jobs again: the rest go at once
            with self._retry_lock:
                self._retrying.popleft()
