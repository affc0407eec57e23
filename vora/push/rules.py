"""Push wake-up rules: which sessions may register a device, which events wake one, what the webhooks say."""

from __future__ import annotations

import hashlib
from typing import Any

from vora.core.clock import rfc3339_ms
from vora.core.errors import BadRequest
from vora.store.push import HoldUp, HoldUpRef, PushRegistration

# The event that announces a terminating call; only an explicitly inbound one wakes a device.
RINGING_EVENT = "callRinging"
INBOUND = "inbound"

# Webhook event names (the X-Vora-Event header and the `type` of each body), see spec/vora-webhooks.yaml.
PUSH_NOTIFICATION = "pushNotification"
HOLDUP_READY = "holdUpReady"
HOLDUP_NOT_READY = "holdUpNotReady"

# Why a held-up call ended without its device connecting.
NOT_READY_TIMEOUT = "timeout"
NOT_READY_PUSH_FAILED = "pushFailed"
NOT_READY_RATE_LIMITED = "rateLimited"


def registration_of(hold_up_mode: bool, push: dict[str, Any] | None) -> PushRegistration | None:
    """Turn SetupIn's validated push object into a registration, refusing one without holdUpMode."""
    if push is None:
        return None
    if not hold_up_mode:
        raise BadRequest("push is only allowed with holdUpMode true: only held-up sessions are woken by a push")
    return PushRegistration(push["platform"], push["deviceToken"], push.get("appId"))


def is_terminating_call(event_type: str, data: Any) -> bool:
    """Tell whether an event announces an incoming call that may need to wake a device."""
    return event_type == RINGING_EVENT and isinstance(data, dict) and data.get("direction") == INBOUND


def _at(epoch_ms: int | None) -> str | None:
    """Format an optional time of a hold-up (milliseconds since the epoch) as RFC 3339, or None."""
    return None if epoch_ms is None else rfc3339_ms(epoch_ms)


def delivery_id(ref: HoldUpRef, event: str) -> str:
    """Name one webhook for one held-up call; the same on every retry and re-delivery, so receivers can dedupe."""
    digest = hashlib.sha256(f"{event}\n{ref.identity}\n{ref.session_id}\n{ref.call_id}".encode()).hexdigest()
    return digest[:32]


def push_body(ref: HoldUpRef, registration: PushRegistration, holdup: HoldUp) -> dict[str, Any]:
    """Build the body VORA posts to the push gateway to wake a session's device."""
    return {
        "type": PUSH_NOTIFICATION,
        "pushId": delivery_id(ref, PUSH_NOTIFICATION),
        "identity": ref.identity,
        "sessionId": ref.session_id,
        "callId": ref.call_id,
        "caller": holdup.caller,
        "eventId": holdup.event_id,
        "platform": registration.platform,
        "deviceToken": registration.device_token,
        "appId": registration.app_id,
        "ringAt": rfc3339_ms(holdup.ring_at),
        "expiresAt": rfc3339_ms(holdup.deadline),
    }


def readiness_body(ref: HoldUpRef, holdup: HoldUp) -> dict[str, Any]:
    """Build the readiness signal for the telephony side: ready with the wake-up time, or not ready and why."""
    if holdup.taken_at is None or holdup.outcome is None:
        raise TypeError("a hold-up is signalled only once it is taken for an outcome")
    taken_at = holdup.taken_at
    ready = holdup.outcome == HOLDUP_READY
    # A device that connected before VORA recorded the gateway's 2xx was woken by the last attempt.
    pushed_at = holdup.pushed_at or (holdup.attempt_at if ready else None)
    body: dict[str, Any] = {
        "type": HOLDUP_READY if ready else HOLDUP_NOT_READY,
        "signalId": delivery_id(ref, holdup.outcome),
        "identity": ref.identity,
        "sessionId": ref.session_id,
        "callId": ref.call_id,
        "eventId": holdup.event_id,
        "ringAt": rfc3339_ms(holdup.ring_at),
        "pushedAt": _at(pushed_at),
    }
    if ready:
        body["readyAt"] = rfc3339_ms(taken_at)
        body["wakeUpMs"] = max(0, taken_at - pushed_at) if pushed_at is not None else None
        body["sinceRingMs"] = max(0, taken_at - holdup.ring_at)
    else:
        body["reason"] = holdup.reason or NOT_READY_TIMEOUT
        body["at"] = rfc3339_ms(taken_at)
    return body
