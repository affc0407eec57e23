"""Store sessions, their WebSocket tokens and their subscriptions in Redis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import redis
from redis.commands.core import Script

from vora.core.settings import Settings
from vora.store import keys, scripts
from vora.store.batching import CommandBatcher
from vora.store.client import is_cluster
from vora.store.codec import text
from vora.store.push import PushRegistration, registration_fields

# How long a tombstone says why a session ended, so that a socket whose worker missed the
# terminate notice learns the reason at its next lease renewal (VORA_WS_LEASE_INTERVAL, 15 s by
# default): this long, or four lease intervals when that is longer.
TOMBSTONE_MS = 2 * 60 * 1000


class IdentityFull(Exception):
    """The identity already holds as many sessions, of all its users together, as it may."""


class NotOwner(Exception):
    """The user does not own the identity it asked for a session on."""


class SetupRateLimited(Exception):
    """The user's or the identity's setup limiter is spent: nothing was written."""

    def __init__(self, scope: str, wait_ms: int) -> None:
        super().__init__(scope, wait_ms)
        self.scope = scope  # 'user' or 'identity'
        self.wait_ms = wait_ms


@dataclass(frozen=True)
class SetupRate:
    """How many setups a user, and an identity with all its users, may make per window (0: no limit)."""

    per_user: int = 0
    per_identity: int = 0
    window_seconds: int = 60

    def interval_ms(self, limit: int) -> int:
        """Return the GCRA emission interval of a limit: one setup every this many ms once the burst is spent."""
        return max(1, self.window_seconds * 1000 // limit) if limit else 0


NO_SETUP_LIMIT = SetupRate()


@dataclass(frozen=True)
class StoredSession:
    """One session as Redis holds it."""

    identity: str
    session_id: str
    subject: str
    connection_type: str
    hold_up_mode: bool
    scopes: frozenset[str]
    events: str
    created_at_ms: int


@dataclass(frozen=True)
class NewSession:
    """What a new session holds besides its id, token and creation time."""

    subject: str
    connection_type: str
    hold_up_mode: bool
    scopes: frozenset[str]
    events: str
    push: PushRegistration | None = None


def session_fields(new: NewSession) -> dict[str, str]:
    """Encode a new session as the fields of its hash (session_from_hash reads them back)."""
    return {
        "sub": new.subject,
        "connectionType": new.connection_type,
        "holdUpMode": "1" if new.hold_up_mode else "0",
        "scopes": " ".join(sorted(new.scopes)),
        "events": new.events,
        **registration_fields(new.push),
    }


@dataclass(frozen=True)
class Lease:
    """A session with sockets open on this instance, to be kept alive."""

    identity: str
    session_id: str
    token_hash: str
    socket_ids: tuple[str, ...]


class Attached(IntEnum):
    """What attaching a socket to a session found (the ADMIT_SOCKET script's first answer)."""

    GONE = 0  # the session has ended: nothing was recorded
    FIRST = 1  # the session's first socket ever
    LATER = 2  # the session had a socket before
    FULL = 3  # the session has its most sockets open already: nothing was recorded


@dataclass(frozen=True)
class Admitted:
    """What admitting a socket found: the attach outcome, the session, and what its start needs."""

    attached: Attached
    session: StoredSession | None  # None exactly when GONE or FULL
    oldest_id: str | None = None  # the stream's oldest entry
    published: int | None = None  # the sequence counter
    newest_id: str | None = None  # the stream's newest entry
    now_ms: int | None = None  # Redis' clock at admission (read only when resuming)
    preceding_id: str | None = None  # the newest entry before the session's creation (first socket, not resuming)


@dataclass(frozen=True)
class Created:
    """A session just stored: the ids of its user's oldest it evicted, and what its first socket's start needs."""

    evicted: list[str]
    preceding_id: str | None = None  # the newest entry before the session's creation
    oldest_id: str | None = None  # the stream's oldest entry
    published: int | None = None  # the sequence counter


def session_from_hash(identity: str, session_id: str, raw: dict[bytes, bytes]) -> StoredSession:
    """Decode a session hash read from Redis."""
    fields = {text(k): text(v) for k, v in raw.items()}
    return StoredSession(
        identity=identity,
        session_id=session_id,
        subject=fields.get("sub", ""),
        connection_type=fields.get("connectionType", ""),
        hold_up_mode=fields.get("holdUpMode") == "1",
        scopes=frozenset(fields.get("scopes", "").split()),
        events=fields.get("events", ""),
        created_at_ms=int(fields.get("createdAt", "0") or 0),
    )


def _check(reply: list[Any], identity: str) -> None:
    """Raise what a setup script's refusal means: NotOwner or SetupRateLimited."""
    status = text(reply[0])
    if status == "not-owner":
        raise NotOwner(identity)
    if status == "rate":
        raise SetupRateLimited(text(reply[1]), int(reply[2]))


def _ending_args(identity: str, selector: str, reason: str, tombstone_ms: int) -> list[str | int]:
    """Build the ARGV both ending scripts take; selector is a subject or a session id."""
    return [
        keys.SESSION_SUFFIX,
        keys.TOKEN_SUFFIX,
        keys.ENDED_SUFFIX,
        keys.identity_prefix(identity),
        selector,
        reason,
        tombstone_ms,
        keys.CONTROL_CHANNEL,
        identity,
    ]


class SessionStore:
    """Create, subscribe and end sessions with one atomic script each."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_seconds: int,
        max_per_user: int,
        max_per_identity: int = 50,
        max_sockets_per_session: int = 10,
        batcher: CommandBatcher | None = None,
        setup_rate: SetupRate = NO_SETUP_LIMIT,
        tombstone_ms: int = TOMBSTONE_MS,
    ) -> None:
        self._redis = client
        self._batcher = batcher
        # Outside Cluster one script may also read the user's directory entry (another hash tag):
        # the ownership check then costs no round trip of its own and cannot race a revocation.
        self._owner_in_script = not is_cluster(client)
        self._ttl_ms = ttl_seconds * 1000
        self._cap = max_per_user
        self._identity_cap = max_per_identity
        self._socket_cap = max_sockets_per_session
        self._rate = setup_rate
        self._tombstone_ms = tombstone_ms
        self._create = client.register_script(scripts.CREATE_SESSION)
        self._own_and_count = client.register_script(scripts.OWN_AND_COUNT_SETUP)
        self._end = client.register_script(scripts.END_SUBJECT_SESSIONS)
        self._subscribe = client.register_script(scripts.SET_SUBSCRIPTION)
        self._end_one = client.register_script(scripts.END_ONE_SESSION)
        self._admit = client.register_script(scripts.ADMIT_SOCKET)
        self._session_of_token = client.register_script(scripts.LIVE_SESSION_ID)

    @classmethod
    def from_settings(
        cls, client: redis.Redis, settings: Settings, batcher: CommandBatcher | None = None
    ) -> SessionStore:
        """Build the store with the session limits the settings give."""
        return cls(
            client,
            ttl_seconds=settings.session_ttl,
            max_per_user=settings.max_sessions_per_identity,
            max_per_identity=settings.max_sessions_per_identity_total,
            max_sockets_per_session=settings.ws_max_sockets_per_session,
            batcher=batcher,
            setup_rate=SetupRate(
                settings.setup_rate_per_user, settings.setup_rate_per_identity, settings.setup_rate_window
            ),
            tombstone_ms=max(TOMBSTONE_MS, int(settings.ws_lease_interval * 4000)),
        )

    def create(
        self,
        identity: str,
        session_id: str,
        token_hash: str,
        new: NewSession,
    ) -> Created:
        """Store a new session; return the ids of its user's oldest it evicted and where its first socket starts.

        Raise NotOwner, writing nothing, when the user does not own the identity, SetupRateLimited
        when the user or the identity set up too many sessions lately, and IdentityFull when it is full.
        """
        rate = self._rate
        script_keys = [
            keys.sessions_index(identity),
            keys.session(identity, session_id),
            keys.websocket_token(identity, token_hash),
            keys.identity_setup_rate(identity),
            keys.event_stream(identity),
            keys.event_sequence(identity),
        ]
        owners = keys.user_identities(new.subject)
        user_rate = keys.user_setup_rate(new.subject)
        window_ms = rate.window_seconds * 1000
        if self._owner_in_script:
            script_keys += [owners, user_rate]
        else:
            # On Cluster the user's keys lie in another slot: one round trip of their own.
            _check(
                self._own_and_count(
                    keys=[owners, user_rate], args=[identity, window_ms, rate.interval_ms(rate.per_user)]
                ),
                identity,
            )
        flat: list[str] = []
        for name, value in session_fields(new).items():
            flat += [name, value]
        script_args = [
            keys.SESSION_SUFFIX,
            keys.TOKEN_SUFFIX,
            keys.ENDED_SUFFIX,
            keys.identity_prefix(identity),
            session_id,
            token_hash,
            new.subject,
            self._ttl_ms,
            self._cap,
            self._tombstone_ms,
            keys.CONTROL_CHANNEL,
            identity,
            self._identity_cap,
            window_ms,
            rate.interval_ms(rate.per_identity),
            rate.interval_ms(rate.per_user),
            *flat,
        ]
        reply = self._run(self._create, script_keys, script_args)
        _check(reply, identity)
        if text(reply[0]) == "full":
            raise IdentityFull(identity)
        _, preceding, oldest, published, *evicted = reply
        return Created(
            [text(item) for item in evicted],
            preceding_id=text(preceding) or None,
            oldest_id=text(oldest) or None,
            published=int(published) if published else None,
        )

    def _run(self, script: Script, script_keys: list[str], args: list[Any]) -> Any:
        """Run a script, in the batcher's next round trip when there is one; load it first if Redis lost it."""
        if self._batcher is None:
            return script(keys=script_keys, args=args)
        try:
            return self._batcher.execute("EVALSHA", script.sha, len(script_keys), *script_keys, *args)
        except redis.exceptions.NoScriptError:
            return script(keys=script_keys, args=args)  # a restarted or new master: this loads it

    def set_subscription(self, identity: str, subject: str, events: str) -> list[str]:
        """Set the subscription of a user's sessions on an identity; return their ids."""
        updated = self._subscribe(
            keys=[keys.sessions_index(identity)],
            args=[
                keys.SESSION_SUFFIX,
                keys.identity_prefix(identity),
                subject,
                events,
                keys.CONTROL_CHANNEL,
                identity,
            ],
        )
        return [text(sid) for sid in updated]

    def end_for_subject(self, identity: str, subject: str, reason: str) -> list[str]:
        """End a user's sessions on an identity and announce it; return their ids."""
        if not subject:
            return []  # the script reads an empty subject as every subject
        ended = self._end(
            keys=[keys.sessions_index(identity)], args=_ending_args(identity, subject, reason, self._tombstone_ms)
        )
        return [text(sid) for sid in ended]

    def get(self, identity: str, session_id: str) -> StoredSession | None:
        """Read one session, or None once it has ended."""
        raw = self._redis.hgetall(keys.session(identity, session_id))
        return session_from_hash(identity, session_id, raw) if raw else None  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any

    def session_of_token(self, identity: str, token_hash: str) -> str | None:
        """Read which session a WebSocket token opens, or None once it has ended or expired (as admission reads it)."""
        session_id = self._session_of_token(
            keys=[keys.websocket_token(identity, token_hash)],
            args=[keys.identity_prefix(identity), keys.SESSION_SUFFIX],
        )
        return text(session_id) if session_id is not None else None

    def ended_reason(self, identity: str, session_id: str) -> str | None:
        """Say why a session ended, if its tombstone is still there."""
        reason = self._redis.get(keys.session_ended(identity, session_id))
        return text(reason) if reason is not None else None

    def end_session(self, identity: str, session_id: str, reason: str) -> bool:
        """End one session and announce it; tell whether it was still there."""
        ended = self._end_one(
            keys=[keys.sessions_index(identity)], args=_ending_args(identity, session_id, reason, self._tombstone_ms)
        )
        return bool(ended)

    def admit(
        self, identity: str, token_hash: str, socket_id: str, now_ms: int, lease_ms: int, *, resuming: bool
    ) -> Admitted:
        """Find a token's session and attach a socket to it in one script, with what its start position needs."""
        reply = self._admit(
            keys=[
                keys.websocket_token(identity, token_hash),
                keys.socket_presence(identity),
                keys.event_stream(identity),
                keys.event_sequence(identity),
            ],
            args=[
                keys.identity_prefix(identity),
                keys.SESSION_SUFFIX,
                keys.SOCKET_MEMBER_SEPARATOR,
                now_ms,
                socket_id,
                now_ms + lease_ms,
                self._ttl_ms,
                self._socket_cap,
                "1" if resuming else "",
            ],
        )
        attached = Attached(int(reply[0]))
        if attached in (Attached.GONE, Attached.FULL):
            return Admitted(attached, None)
        _, session_id, flat, oldest, published, newest, now_ms, preceding = reply
        sid = text(session_id)
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        return Admitted(
            attached,
            session_from_hash(identity, sid, raw),
            oldest_id=text(oldest) or None,
            published=int(published) if published else None,
            newest_id=text(newest) or None,
            now_ms=int(now_ms) if now_ms else None,
            preceding_id=text(preceding) or None,
        )

    def detach(self, identity: str, session_id: str, socket_id: str) -> None:
        """Forget a socket that closed; a socket never detached drops out when its lease runs out."""
        presence, member = keys.socket_presence(identity), keys.socket_member(session_id, socket_id)
        if self._batcher is None:
            self._redis.zrem(presence, member)
            return
        # A mass close (an instance draining, a network blip) detaches thousands of sockets at once: each
        # waiting for a pooled connection of its own, most gave up after the pool's timeout and their
        # sockets stayed counted as open until their leases ran out. Batched, they share a few round trips.
        self._batcher.execute("ZREM", presence, member)

    def open_sockets(self, identity: str, now_ms: int) -> dict[str, int]:
        """Count the open sockets of each of an identity's sessions, on every instance."""
        members = self._redis.zrangebyscore(keys.socket_presence(identity), f"({now_ms}", "+inf")
        counts: dict[str, int] = {}
        for member in members:  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any
            session_id = text(member).partition(keys.SOCKET_MEMBER_SEPARATOR)[0]
            counts[session_id] = counts.get(session_id, 0) + 1
        return counts

    def renew(self, leases: Sequence[Lease], now_ms: int, lease_ms: int) -> list[tuple[bool, str | None]]:
        """Extend the sessions and sockets of open leases in one round trip.

        Return, for each lease, whether its session was still there and its current subscription.
        """
        pipe = self._redis.pipeline(transaction=False)
        for lease in leases:
            pipe.pexpire(keys.session(lease.identity, lease.session_id), self._ttl_ms)
            pipe.pexpire(keys.websocket_token(lease.identity, lease.token_hash), self._ttl_ms)
            pipe.pexpire(keys.sessions_index(lease.identity), self._ttl_ms, gt=True)
            pipe.hget(keys.session(lease.identity, lease.session_id), "events")
        deadline = now_ms + lease_ms
        for identity in dict.fromkeys(lease.identity for lease in leases):
            # Sockets of an instance that died without detaching leave here once their lease is over.
            pipe.zremrangebyscore(keys.socket_presence(identity), "-inf", now_ms)
            pipe.pexpire(keys.socket_presence(identity), self._ttl_ms)
        for lease in leases:
            members = {keys.socket_member(lease.session_id, socket_id): deadline for socket_id in lease.socket_ids}
            pipe.zadd(keys.socket_presence(lease.identity), members)
        results = pipe.execute()
        return [
            (bool(results[index * 4]), None if results[index * 4 + 3] is None else text(results[index * 4 + 3]))
            for index in range(len(leases))
        ]

    def end_for_identity(self, identity: str, reason: str) -> list[str]:
        """End every session of an identity, whoever opened it, and announce it; return their ids."""
        # A token's subject is never empty, so '' selects every session (see END_SUBJECT_SESSIONS).
        ended = self._end(
            keys=[keys.sessions_index(identity)], args=_ending_args(identity, "", reason, self._tombstone_ms)
        )
        return [text(sid) for sid in ended]

    def sessions_of(self, identity: str) -> list[StoredSession]:
        """Read an identity's live sessions, oldest first, in two round trips."""
        session_ids = [text(sid) for sid in self._redis.zrange(keys.sessions_index(identity), 0, -1)]  # type: ignore[union-attr] # redis-py types every reply as Awaitable | value
        if not session_ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.hgetall(keys.session(identity, session_id))
        return [
            session_from_hash(identity, session_id, raw)
            for session_id, raw in zip(session_ids, pipe.execute(), strict=True)
            if raw
        ]
