"""Session rules: who may open a session, what its token looks like, what it subscribes to."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

from vora.core.catalog import SUBSCRIBABLE_EVENTS
from vora.core.errors import BadRequest, Conflict, NotFound, TooManyRequests, VoraError
from vora.core.log_fields import error_fields
from vora.sessions.ownership import DirectoryState, Ownership
from vora.store.client import REDIS_TROUBLE
from vora.store.directory import Directory
from vora.store.push import PushRegistration
from vora.store.sessions import (
    Admitted,
    Attached,
    IdentityFull,
    NewSession,
    NotOwner,
    SessionStore,
    SetupRateLimited,
    StoredSession,
)
from vora.store.streams import Position, position_before, resume_point, stream_id, stream_position
from vora.store.subscriptions import SUBSCRIBE_ALL, Subscription

log = logging.getLogger("vora.sessions")

SUPPORTED_CONNECTION_TYPES = ("WebSocket", "ServerSentEvents")
TOKEN_VERSION = "v1"  # noqa: S105 - a format tag, not a secret
TOKEN_SECRET_BYTES = 32  # 256 bits


@dataclass(frozen=True)
class OpenedSession:
    """What setup hands back: the session's id, its WebSocket token and where its first socket starts."""

    session_id: str
    websocket_token: str
    start_id: str  # the eventId the session's first socket starts after (its channelOpened's lastEventId)


class SocketRefused(VoraError):
    """A socket turned away before the upgrade, with the HTTP status it gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SocketAdmission:
    """A socket the session rules let in: its session, its presence entry and where its delivery starts."""

    session: StoredSession
    token_hash: str
    socket_id: str
    start: Position | None  # delivery starts after this stream position (None: the oldest retained)
    resumed: bool  # the client passed a lastEventId
    gap: dict[str, Any] | None  # the resumeGap data when events after lastEventId are gone
    start_id: str  # the start as an eventId a client resumes from to get exactly this delivery


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint_websocket_token(identity: str) -> str:
    """Make a fresh WebSocket token that names its identity and carries 256 random bits."""
    return f"{TOKEN_VERSION}.{_b64(identity.encode())}.{_b64(secrets.token_bytes(TOKEN_SECRET_BYTES))}"


def hash_token(token: str) -> str:
    """Return the SHA-256 of a token, the only form Redis ever holds."""
    return hashlib.sha256(token.encode()).hexdigest()


def identity_of_token(token: str) -> str | None:
    """Read the identity a WebSocket token names, or None for a malformed token."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION or len(token) > 512:
        return None
    try:
        identity = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
        secret = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if len(secret) != TOKEN_SECRET_BYTES or not identity:
        return None
    return identity


def subscription_value(subscribe_all: bool, events: Iterable[str] | None) -> str:
    """Check a subscription request and encode it as stored, refusing event types outside the catalogue."""
    wanted = () if subscribe_all else tuple(events or ())
    unknown = [name for name in dict.fromkeys(wanted) if name not in SUBSCRIBABLE_EVENTS]
    if unknown:
        raise BadRequest(f"Unknown event type(s) {', '.join(unknown)}; known events: {', '.join(SUBSCRIBABLE_EVENTS)}")
    return Subscription(subscribe_all, wanted).encode()


UNKNOWN_TOKEN = "The webSocketToken is unknown, expired or revoked; call /identity/setup again"  # noqa: S105 - a message


def start_event_id(after_id: str | None, oldest_id: str | None, published: int | None) -> str:
    """Spell where a socket's delivery starts as an eventId that resuming from repeats it, without a resumeGap.

    after_id is the retained (or resumed-from) event delivery starts after; without one, delivery
    starts with the oldest retained event (oldest_id), spelt as the id just before it (same
    milliseconds, one sequence number less), or, when the stream holds nothing, `0-N` for N events
    published before (published, the sequence counter; `0-0` for an identity that never had one).
    Either sorts before every event delivered, after every event not, and passes the resume checks
    (a sequence number the counter has reached, a position no later than the newest entry). Setup
    spells a session's first socket's start by the same rule, from the same reads.
    """
    if after_id is not None:
        return after_id
    if oldest_id is not None:
        millis, sequence = stream_position(oldest_id)
        return stream_id((millis, sequence - 1))
    return stream_id((0, published or 0))


def _start_of(
    session: StoredSession, token_hash: str, socket_id: str, last_event: Position | None, admitted: Admitted
) -> SocketAdmission:
    """Say where an admitted socket's delivery starts, from what the admission read."""
    if last_event is not None:
        point = resume_point(last_event, admitted.oldest_id, admitted.published, admitted.newest_id, admitted.now_ms)
        gap: dict[str, Any] | None = None
        requested = stream_id(last_event)
        if point.ahead:
            # Never handed out here: events acknowledged before a Redis failover or restart were
            # lost, or the id is another identity's. Said, not refused: the client did nothing wrong
            # in the first case, and a 400 would keep it from reconnecting at all.
            gap = {
                "reason": "ahead",
                "requestedEventId": requested,
                "oldestEventId": None,
                "newestEventId": admitted.newest_id,
            }
        elif point.gap:
            gap = {"reason": "retention", "requestedEventId": requested, "oldestEventId": point.oldest_id}
        after_id = stream_id(point.after) if point.after is not None else None
        start_id = start_event_id(after_id, admitted.oldest_id, admitted.published)
        return SocketAdmission(session, token_hash, socket_id, point.after, True, gap, start_id)
    # The first socket gets everything published since setup; later ones start live.
    if admitted.attached is Attached.FIRST:
        # Its start, just before the session's creation, is no eventId: the entry before it stands for it.
        start: Position | None = position_before(session.created_at_ms)
        start_id = start_event_id(admitted.preceding_id, admitted.oldest_id, admitted.published)
    else:
        start = stream_position(admitted.newest_id) if admitted.newest_id is not None else None
        start_id = start_event_id(admitted.newest_id, admitted.oldest_id, admitted.published)
    return SocketAdmission(session, token_hash, socket_id, start, False, None, start_id)


class DirectoryUnavailable(VoraError):
    """The directory holds nothing since Redis last started empty: a user's missing identity proves nothing (503)."""

    status = 503

    def __init__(self, state: DirectoryState) -> None:
        if state is DirectoryState.LOST:
            message = (
                "The identity directory was lost (the session store restarted empty) and has not been restored "
                "by the telephony side yet; retry later"
            )
        else:
            message = (
                "The identity directory is empty: the telephony side has not provisioned it since the session "
                "store last started empty; retry later"
            )
        super().__init__(message, {"Retry-After": str(DIRECTORY_RETRY_AFTER)})


DIRECTORY_RETRY_AFTER = 10  # seconds: a resynchronisation by the telephony side takes about that


class SessionService:
    """Apply the session rules on top of the directory and the session store."""

    def __init__(
        self,
        *,
        directory: Directory,
        store: SessionStore,
        presence_lease_ms: int,
        ownership: Ownership | None = None,
    ) -> None:
        self._directory = directory
        self._store = store
        self._presence_lease_ms = presence_lease_ms
        self._ownership = ownership or Ownership(directory, store)

    def _refuse_unowned(self, not_found: str) -> NoReturn:
        """Raise NotFound, or DirectoryUnavailable when the directory is not there to say who owns what."""
        state = self._ownership.status().state
        if state is not DirectoryState.PROVISIONED:
            raise DirectoryUnavailable(state)
        raise NotFound(not_found)

    def identities(self, subject: str) -> list[str]:
        """Return the caller's identities, or raise NotFound when it has none (503 while the directory is absent)."""
        identities = self._directory.identities_of(subject)
        if not identities:
            self._refuse_unowned("No identity is assigned to this user")
        return identities

    def open(
        self,
        subject: str,
        identity: str,
        connection_type: str,
        hold_up_mode: bool,
        scopes: Iterable[str],
        push: PushRegistration | None = None,
    ) -> OpenedSession:
        """Open a session on one of the caller's identities, subscribed to every event, with its push registration."""
        # Past the per-user cap the caller's own oldest session goes, never another user's;
        # past the identity's total the setup is refused (409).
        if connection_type not in SUPPORTED_CONNECTION_TYPES:
            supported = ", ".join(SUPPORTED_CONNECTION_TYPES)
            raise BadRequest(f"connectionType {connection_type!r} is not supported; supported: {supported}")
        token = mint_websocket_token(identity)
        session_id = uuid.uuid4().hex
        try:
            created = self._store.create(
                identity,
                session_id,
                hash_token(token),
                NewSession(subject, connection_type, hold_up_mode, frozenset(scopes), SUBSCRIBE_ALL, push),
            )
        except NotOwner:
            self._refuse_unowned(f"Identity {identity} is not assigned to this user")
        except SetupRateLimited as limited:
            retry_after = max(1, -(-limited.wait_ms // 1000))
            if limited.scope == "user":
                message = "This user set up too many sessions lately (VORA_SETUP_RATE_PER_USER)"
            else:
                message = f"Identity {identity} had too many sessions set up lately (VORA_SETUP_RATE_PER_IDENTITY)"
            raise TooManyRequests(f"{message}; retry after {retry_after} s", retry_after) from None
        except IdentityFull:
            raise Conflict(
                f"Identity {identity} already has as many open sessions as it may, counting all its users; "
                "a user must log out of it first"
            ) from None
        # The first socket starts after the entry before the session's creation (_start_of), read in the
        # same script: a client that opens it with this lastEventId gets the same delivery, and so does
        # one whose first connection dropped before it read channelOpened.
        start_id = start_event_id(created.preceding_id, created.oldest_id, created.published)
        return OpenedSession(session_id, token, start_id)

    def subscribe(self, subject: str, identity: str, subscribe_all: bool, events: Iterable[str] | None) -> None:
        """Set which events the caller's sessions on an identity receive."""
        value = subscription_value(subscribe_all, events)
        if not self._store.set_subscription(identity, subject, value):
            raise NotFound(f"No active session of this user on identity {identity}; call /identity/setup first")

    def logout(self, subject: str, identity: str, reason: str = "logout") -> list[str]:
        """End the caller's sessions on an identity, or raise NotFound when there are none."""
        ended = self._store.end_for_subject(identity, subject, reason)
        if not ended:
            raise NotFound(f"No active session of this user on identity {identity}")
        return ended

    def admit_socket(self, token: str, last_event: Position | None, now_ms: int) -> SocketAdmission:
        """Let a socket in before its upgrade: find its session, count it there, and say where it starts.

        One Redis round trip. Raise SocketRefused (401 for an unknown token or an ended session,
        429 when the session has its most sockets open).
        """
        identity = identity_of_token(token)
        if identity is None:
            raise SocketRefused(401, UNKNOWN_TOKEN)
        token_hash = hash_token(token)
        socket_id = uuid.uuid4().hex
        admitted = self._store.admit(
            identity, token_hash, socket_id, now_ms, self._presence_lease_ms, resuming=last_event is not None
        )
        if admitted.attached is Attached.FULL:
            raise SocketRefused(
                429, "This session has the most sockets it may open (VORA_WS_MAX_SOCKETS_PER_SESSION); close one first"
            )
        if admitted.session is None:
            raise SocketRefused(401, UNKNOWN_TOKEN)
        return _start_of(admitted.session, token_hash, socket_id, last_event, admitted)

    def check_socket_token(self, token: str) -> None:
        """Raise SocketRefused (401) unless the token still opens a session; admit nothing."""
        identity = identity_of_token(token)
        if identity is None or self._store.session_of_token(identity, hash_token(token)) is None:
            raise SocketRefused(401, UNKNOWN_TOKEN)

    def ended_reason(self, session: StoredSession) -> str | None:
        """Say why an admitted socket's session has ended since (tokenExpired when no tombstone says), or None."""
        if self._store.get(session.identity, session.session_id) is not None:
            return None
        return self._store.ended_reason(session.identity, session.session_id) or "tokenExpired"

    def socket_closed(self, admission: SocketAdmission) -> None:
        """Take a closed socket out of its session's presence."""
        session = admission.session
        try:
            self._store.detach(session.identity, session.session_id, admission.socket_id)
        except REDIS_TROUBLE as exc:
            # The socket's lease runs out by itself; presence is only late, not wrong for long.
            log.info("socket detach failed", extra={"fields": error_fields(exc)})
