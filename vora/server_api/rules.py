"""Server API rules: publish for the telephony side (once per idempotency key), end sessions, look them up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vora.core.clock import rfc3339_ms
from vora.core.errors import BadRequest, Conflict, NotFound, VoraError
from vora.core.settings import Settings
from vora.events.publisher import EventPublisher, InvalidEvent, fingerprint, inline_refs, stream_envelope
from vora.http.fast_path import body_check
from vora.http.validation import rule_message
from vora.store.client import REFUSAL_WORDS, NotWritten, WriteOutcomeUnknown, is_unavailable, refusal_for_now
from vora.store.sessions import SessionStore, StoredSession
from vora.store.streams import (
    MAX_ID_PART,
    Append,
    Appended,
    NotReplicated,
    Position,
    StreamStore,
    parse_event_id,
)
from vora.store.subscriptions import Subscription

SERVER_SPEC_FILE = "vora-server.yaml"


RETRY_AFTER_SECONDS = 1


class PublishUnavailable(VoraError):
    """Redis could not take a publish: the message says whether the event was not published or may have been."""

    status = 503

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})


def not_published(outcome: str, cause: BaseException | None = None) -> PublishUnavailable:
    """Say that Redis could not be reached before anything was sent, or refused it: nothing was published."""
    code = refusal_for_now(cause) if cause is not None else None
    if code is None:
        return PublishUnavailable(f"The event store is unavailable: {outcome}; retry shortly")
    words, retry_after = REFUSAL_WORDS[code]
    return PublishUnavailable(f"The event store refused the write ({words}): {outcome}; retry later", retry_after)


def maybe_published(what: str, keyed: bool) -> PublishUnavailable:
    """Say that Redis went silent after the write was sent: it may or may not have been published."""
    message = f"The event store did not confirm the write in time: {what} may or may not have been published"
    if keyed:
        return PublishUnavailable(f"{message}; retry with the same idempotencyKey to publish it exactly once")
    return PublishUnavailable(
        f"{message}, and a retry without an idempotencyKey may publish it twice: read the identity's events "
        "(GET /identities/{identity}/events) before retrying, and send an idempotencyKey with every event"
    )


@cache
def load_server_spec(spec_dir: Path) -> dict[str, Any]:
    """Load the server API's OpenAPI document once per process."""
    document: dict[str, Any] = yaml.safe_load((spec_dir / SERVER_SPEC_FILE).read_text())
    return document


def check_event_id(event_id: str) -> Position:
    """Return the stream position of an eventId, or raise BadRequest when it is not one Redis could hold."""
    # parse_event_id's `$` lets a final newline through, as the WebSocket's lastEventId always has; `after` never did.
    position = parse_event_id(event_id) if not event_id.endswith("\n") else None
    if position is None:
        raise BadRequest(f"after: {event_id!r} is not an eventId (two numbers of at most {MAX_ID_PART}, joined by -)")
    return position


def subscription_of(value: str) -> dict[str, Any]:
    """Describe a stored subscription the way eventSubscription takes it."""
    subscription = Subscription.decode(value)
    return {"subscribeAll": subscription.subscribe_all, "events": list(subscription.events)}


@dataclass(frozen=True)
class ItemOutcome:
    """What became of one item of a batch."""

    index: int
    appended: Appended | None = None
    error_status: int = 0
    message: str = ""

    def as_json(self) -> dict[str, Any]:
        """Shape the item's result as BatchItemResult."""
        if self.appended is None:
            return {
                "index": self.index,
                "status": "refused",
                "error": {"status": str(self.error_status), "message": self.message},
            }
        return {
            "index": self.index,
            "status": "duplicate" if self.appended.duplicate else "published",
            "eventId": self.appended.event_id,
            "sequenceNumber": self.appended.sequence_number,
        }


@dataclass(frozen=True)
class Offered:
    """An item that passed its checks, ready to append."""

    index: int
    event: Append
    data: Any


class ServerApi:
    """Apply the server API's rules on top of the publisher and the stores."""

    def __init__(
        self,
        publisher: EventPublisher,
        streams: StreamStore,
        sessions: SessionStore,
        spec_dir: Path,
        max_batch: int,
        idempotency_window_seconds: int,
    ) -> None:
        self._publisher = publisher
        self._streams = streams
        self._sessions = sessions
        self._max_batch = max_batch
        self._window_ms = idempotency_window_seconds * 1000
        schemas = load_server_spec(spec_dir)["components"]["schemas"]
        # Inlined once: resolving $ref on every item costs more than the rest of its checks. Formats are checked as
        # Connexion checks a single publish's body, so a batch item and a single event are refused in the same words.
        batch_event = inline_refs(schemas["BatchEvent"], schemas)
        self._batch_event = jsonschema.Draft4Validator(
            batch_event, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
        )
        # A good item's verdict from jsonschema_rs where it reads the schema alike; a refusal's words from jsonschema.
        self._batch_event_valid = body_check(batch_event, self._batch_event)

    @classmethod
    def from_settings(
        cls, settings: Settings, publisher: EventPublisher, streams: StreamStore, sessions: SessionStore
    ) -> ServerApi:
        """Build the rules with the batch limit and idempotency window the settings ask for."""
        return cls(
            publisher,
            streams,
            sessions,
            settings.spec_dir,
            settings.server_api_max_batch,
            settings.server_api_idempotency_window,
        )

    def _checked(self, identity: str, body: dict[str, Any]) -> Append:
        """Check one event against the catalogue and attach its idempotency key and fingerprint."""
        event_type, data, timestamp = body["type"], body["data"], body.get("timestamp")
        try:
            event = self._publisher.checked(identity, event_type, data, timestamp)
        except InvalidEvent as exc:
            raise BadRequest(str(exc)) from None
        key = body.get("idempotencyKey")
        if key is None:
            return event
        return Append(
            event.identity,
            event.event_type,
            event.timestamp,
            event.data_json,
            key,
            fingerprint(event_type, data, timestamp),
        )

    @staticmethod
    def _refuse_reuse(event: Append, appended: Appended) -> None:
        if appended.duplicate and appended.fingerprint != event.fingerprint:
            raise Conflict(
                f"idempotencyKey {event.idempotency_key!r} already published a different event "
                f"({appended.event_id}) for {event.identity}; use a new key for a new event"
            )

    def publish(self, identity: str, body: dict[str, Any]) -> Appended:
        """Publish one event, or answer what its idempotency key published before."""
        event = self._checked(identity, body)
        try:
            appended = self._publisher.publish_once(event, body["data"], self._window_ms)
        except NotWritten as exc:
            raise not_published("the event was not published", exc.__cause__) from exc
        except WriteOutcomeUnknown as exc:
            raise maybe_published("the event", event.idempotency_key is not None) from exc
        self._refuse_reuse(event, appended)
        return appended

    def _offered(self, index: int, item: Any) -> Offered:
        valid = self._batch_event_valid(item)
        error = None if valid else jsonschema.exceptions.best_match(self._batch_event.iter_errors(item))
        if error is not None:
            where = ".".join(str(part) for part in error.absolute_path)
            message = rule_message(error)
            raise BadRequest(f"{where}: {message}" if where else message)
        return Offered(index, self._checked(item["identity"], item), item["data"])

    def publish_batch(self, items: Sequence[Any]) -> list[ItemOutcome]:
        """Check each item on its own, publish the good ones in one round trip and answer every one."""
        if len(items) > self._max_batch:
            raise BadRequest(f"events: {len(items)} items is more than the {self._max_batch} a batch may carry")
        outcomes: dict[int, ItemOutcome] = {}
        offered: list[Offered] = []
        for index, item in enumerate(items):
            try:
                offered.append(self._offered(index, item))
            except BadRequest as exc:
                outcomes[index] = ItemOutcome(index, error_status=400, message=exc.message)
        try:
            results = self._publisher.publish_many([(o.event, o.data) for o in offered], self._window_ms)
        except NotWritten as exc:
            raise not_published("no event of the batch was published", exc.__cause__) from exc
        except WriteOutcomeUnknown as exc:
            keyed = all(o.event.idempotency_key is not None for o in offered)
            raise maybe_published("any event of the batch", keyed) from exc
        refusals = [r for r in results if isinstance(r, Exception) and is_unavailable(r)]
        if results and len(refusals) == len(results):
            # Redis refused every call (READONLY, TRYAGAIN, OOM, BUSY): the batch as a whole is a 503.
            raise not_published("no event of the batch was published", refusals[0])
        for item, result in zip(offered, results, strict=True):
            outcomes[item.index] = self._outcome(item, result)
        return [outcomes[index] for index in range(len(items))]

    def _outcome(self, item: Offered, result: Appended | Exception) -> ItemOutcome:
        if isinstance(result, NotReplicated):
            return ItemOutcome(item.index, error_status=503, message=str(result))
        if isinstance(result, Exception):
            # Unavailable or refused by Redis: this item alone, and retrying it later is safe.
            code = refusal_for_now(result)
            why = REFUSAL_WORDS[code][0] if code is not None else type(result).__name__
            return ItemOutcome(item.index, error_status=503, message=f"not published: {why}")
        try:
            self._refuse_reuse(item.event, result)
        except Conflict as exc:
            return ItemOutcome(item.index, error_status=409, message=exc.message)
        return ItemOutcome(item.index, result)

    def history(self, identity: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Return up to limit retained events after an eventId, and the cursor of the next page."""
        start = None if after is None else check_event_id(after)
        events = self._streams.read_after(identity, start, limit + 1)
        page = events[:limit]
        next_after = page[-1].event_id if len(events) > limit else None
        return [stream_envelope(identity, event) for event in page], next_after

    def sessions(self, identity: str, now_ms: int) -> list[tuple[StoredSession, int]]:
        """Return an identity's sessions, oldest first, each with its sockets open on any instance."""
        sockets = self._sessions.open_sockets(identity, now_ms)
        return [(session, sockets.get(session.session_id, 0)) for session in self._sessions.sessions_of(identity)]

    def session_list(self, identity: str, now_ms: int) -> dict[str, Any]:
        """Describe an identity's sessions as SessionList: each with its sockets, and whether any is open."""
        sessions = [
            {
                "sessionId": session.session_id,
                "user": session.subject,
                "connectionType": session.connection_type,
                "createdAt": rfc3339_ms(session.created_at_ms),
                "holdUpMode": session.hold_up_mode,
                "subscription": subscription_of(session.events),
                "socketOpen": sockets > 0,
                "sockets": sockets,
            }
            for session, sockets in self.sessions(identity, now_ms)
        ]
        return {"identity": identity, "online": any(s["socketOpen"] for s in sessions), "sessions": sessions}

    def open_sockets(self, identity: str, now_ms: int) -> int:
        """Count the sockets an identity has open, on every instance."""
        return sum(self._sessions.open_sockets(identity, now_ms).values())

    def disconnect(self, identity: str, reason: str, session_id: str | None = None) -> list[str]:
        """End one session, or every session, of an identity; its sockets are told why and closed."""
        if session_id is None:
            return self._sessions.end_for_identity(identity, reason)
        if not self._sessions.end_session(identity, session_id, reason):
            raise NotFound(f"Identity {identity} has no session {session_id}")
        return [session_id]
