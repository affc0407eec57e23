"""A ready-to-send data template of each publishable event type, for the console's telephony simulator."""

from __future__ import annotations

from typing import Any, Final

from vora.core.catalog import SUBSCRIBABLE_EVENTS

CALL_ID: Final = "sim-call-1"
RECORDING_ID: Final = "sim-rec-1"
CALLER: Final = "+34602128708"
CALLEE: Final = "+34911000111"

# One call's life as a softphone sees it: the same callId throughout, so a console can follow it.
_TEMPLATES: Final[dict[str, dict[str, Any]]] = {
    "callDialing": {"callId": CALL_ID, "direction": "outbound", "to": CALLEE},
    "callRinging": {"callId": CALL_ID, "direction": "inbound", "from": CALLER, "remoteName": "Simulated caller"},
    "callAnswered": {"callId": CALL_ID, "direction": "inbound", "from": CALLER},
    "callHeld": {"callId": CALL_ID},
    "callResumed": {"callId": CALL_ID},
    "callTransferred": {"callId": CALL_ID, "transferTarget": CALLEE},
    "callForwarded": {"callId": CALL_ID, "forwardedTo": CALLEE, "reason": "busy"},
    "callEnded": {"callId": CALL_ID, "reason": "hangup", "durationSeconds": 42},
    "callMissed": {"callId": CALL_ID, "direction": "inbound", "from": CALLER},
    "presence": {"status": "busy", "note": "on a simulated call"},
    "recordingStarted": {"callId": CALL_ID, "recordingId": RECORDING_ID},
    "recordingPaused": {"callId": CALL_ID, "recordingId": RECORDING_ID},
    "recordingResumed": {"callId": CALL_ID, "recordingId": RECORDING_ID},
    "recordingStopped": {"callId": CALL_ID, "recordingId": RECORDING_ID, "durationSeconds": 40},
    "recordingFailed": {"callId": CALL_ID, "recordingId": RECORDING_ID, "reason": "storage unavailable"},
}


def data_templates() -> dict[str, dict[str, Any]]:
    """Return a fresh copy of the templates, one per publishable event type, in the catalogue's order."""
    return {event_type: dict(_TEMPLATES[event_type]) for event_type in SUBSCRIBABLE_EVENTS}
