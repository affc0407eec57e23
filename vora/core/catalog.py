"""The VORA event catalogue: every event type, its family and the scope it needs."""

from __future__ import annotations

from enum import Enum


class Family(str, Enum):
    """Group event types by what they describe."""

    CALL = "call"
    PRESENCE = "presence"
    RECORDING = "recording"
    LIFECYCLE = "lifecycle"


SCOPE_IDENTITIES = "scope.vora.identities"

FAMILY_SCOPES: dict[Family, str | None] = {
    Family.CALL: "scope.vora.calls",
    Family.PRESENCE: "scope.vora.presence",
    Family.RECORDING: "scope.vora.recording",
    Family.LIFECYCLE: None,
}

# Every scope a VORA access token may carry: what the dev tokens grant and what browsers ask for.
ALL_SCOPES: tuple[str, ...] = (SCOPE_IDENTITIES, *(s for s in FAMILY_SCOPES.values() if s))

# Order matters: it is the order of the EventType enum in spec/vora.yaml and of the
# AsyncAPI messages; tests hold the three lists equal.
SUBSCRIBABLE_EVENTS: dict[str, Family] = {
    "callDialing": Family.CALL,
    "callRinging": Family.CALL,
    "callAnswered": Family.CALL,
    "callHeld": Family.CALL,
    "callResumed": Family.CALL,
    "callTransferred": Family.CALL,
    "callForwarded": Family.CALL,
    "callEnded": Family.CALL,
    "callMissed": Family.CALL,
    "presence": Family.PRESENCE,
    "recordingStarted": Family.RECORDING,
    "recordingPaused": Family.RECORDING,
    "recordingResumed": Family.RECORDING,
    "recordingStopped": Family.RECORDING,
    "recordingFailed": Family.RECORDING,
}

# Sent by VORA itself to every socket, whatever its subscription or scopes.
LIFECYCLE_EVENTS: tuple[str, ...] = ("heartbeat", "channelTerminated", "resumeGap", "channelOpened")


def required_scope(event_type: str) -> str | None:
    """Return the access-token scope a socket needs to receive this event type."""
    family = SUBSCRIBABLE_EVENTS.get(event_type, Family.LIFECYCLE)
    return FAMILY_SCOPES[family]
