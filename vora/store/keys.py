"""Build every Redis key VORA uses, in one place.

Everything one operation touches for one identity shares the hash tag `{identity}`,
so that scripts and transactions stay in one Redis Cluster slot. Lua scripts derive
per-session keys from the identity prefix with the suffixes defined here and passed
to them as arguments, never spelled out inside the script.
"""

from __future__ import annotations

PREFIX = "vora"

SESSION_SUFFIX = "session:"
TOKEN_SUFFIX = "wstoken:"  # noqa: S105 - a key segment, not a secret
ENDED_SUFFIX = "ended:"

CONTROL_CHANNEL = f"{PREFIX}:control"
EVENTS_CHANNEL = f"{PREFIX}:events"


def _escape_tag(value: str) -> str:
    # A brace in a user id would end the hash tag early; percent-encode it.
    return value.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def user_identities(subject: str) -> str:
    """Name the set of identities a user (token `sub`) owns."""
    return f"{PREFIX}:{{u:{_escape_tag(subject)}}}:identities"


def user_setup_rate(subject: str) -> str:
    """Name the limiter (a GCRA arrival time) of a user's session setups, in the user's slot."""
    return f"{PREFIX}:{{u:{_escape_tag(subject)}}}:setuprate"


# Set when the directory is first provisioned (the value: when, in ms) and never removed by VORA: its
# absence means Redis holds no directory written since it last started empty. Its own hash tag: on
# Cluster it lives in the slot of `{directory}`.
DIRECTORY_MARKER = f"{PREFIX}:{{directory}}:provisioned"


def identity_prefix(identity: str) -> str:
    """Name the prefix of every key of one identity (the identity is its hash tag)."""
    return f"{PREFIX}:{{{_escape_tag(identity)}}}:"


def sessions_index(identity: str) -> str:
    """Name the sorted set of an identity's session ids, scored by creation time."""
    return identity_prefix(identity) + "sessions"


def session(identity: str, session_id: str) -> str:
    """Name the hash that holds one session."""
    return identity_prefix(identity) + SESSION_SUFFIX + session_id


def websocket_token(identity: str, token_hash: str) -> str:
    """Name the key that maps a WebSocket token's SHA-256 to its session id."""
    return identity_prefix(identity) + TOKEN_SUFFIX + token_hash


def socket_presence(identity: str) -> str:
    """Name the sorted set of an identity's open sockets (`<session id>:<socket id>`), scored by lease deadline."""
    return identity_prefix(identity) + "sockets"


SOCKET_MEMBER_SEPARATOR = ":"


def socket_member(session_id: str, socket_id: str) -> str:
    """Name one open socket inside its identity's presence set."""
    return f"{session_id}{SOCKET_MEMBER_SEPARATOR}{socket_id}"


def identity_setup_rate(identity: str) -> str:
    """Name the limiter (a GCRA arrival time) of an identity's session setups, all its users together."""
    return identity_prefix(identity) + "setuprate"


def session_ended(identity: str, session_id: str) -> str:
    """Name the short-lived tombstone that says why a session ended."""
    return identity_prefix(identity) + ENDED_SUFFIX + session_id


def event_stream(identity: str) -> str:
    """Name the Redis Stream of an identity's events."""
    return identity_prefix(identity) + "events"


def event_sequence(identity: str) -> str:
    """Name the counter that numbers an identity's events."""
    return identity_prefix(identity) + "seq"


def idempotency(identity: str, key: str) -> str:
    """Name the record of what a publisher's idempotency key published for an identity."""
    return identity_prefix(identity) + "idem:" + key


# Push wake-up (holdUpMode). The job queue and the hold-up deadlines are shared by every identity;
# they carry a hash tag of their own, so in Redis Cluster both live in the one slot of `{push}`.
PUSH_JOBS = f"{PREFIX}:{{push}}:jobs"
PUSH_DEADLINES = f"{PREFIX}:{{push}}:deadlines"
PUSH_GROUP = "vora-push"


def push_job_queued(identity: str, event_id: str) -> str:
    """Name the marker saying an event's push job was queued (in the queue's slot, so one script sets both)."""
    return f"{PREFIX}:{{push}}:queued:{identity}:{event_id}"


def holdups(identity: str, session_id: str) -> str:
    """Name the hash of a session's held-up calls (call id -> hold-up JSON)."""
    return identity_prefix(identity) + "holdups:" + session_id


def push_rate(identity: str) -> str:
    """Name the counter of pushes sent to an identity in the current rate-limit window."""
    return identity_prefix(identity) + "pushrate"
