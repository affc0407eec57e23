"""Handlers of the server API's Connections tag."""

from __future__ import annotations

import time
from typing import Any

from vora.server_api.app import server_api
from vora.server_api.rules import rfc3339_ms, subscription_of

Body = dict[str, Any]
DEFAULT_REASON = "disconnected"


def _now_ms() -> int:
    return int(time.time() * 1000)


def listSessions(identity: str) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
    """List an identity's sessions with their sockets open on any instance."""
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
        for session, sockets in server_api().sessions(identity, _now_ms())
    ]
    return {"identity": identity, "online": any(s["socketOpen"] for s in sessions), "sessions": sessions}, 200


def online(identity: str) -> tuple[Body, int]:
    """Tell whether an identity has a socket open on any instance, and how many."""
    sockets = server_api().open_sockets(identity, _now_ms())
    return {"identity": identity, "online": sockets > 0, "sockets": sockets}, 200


def disconnectIdentity(identity: str, reason: str = DEFAULT_REASON) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
    """End every session of an identity and close its sockets everywhere."""
    return {"identity": identity, "reason": reason, "ended": server_api().disconnect(identity, reason)}, 200


def disconnectSession(identity: str, sessionId: str, reason: str = DEFAULT_REASON) -> tuple[Body, int]:  # noqa: N802, N803 - named by the spec
    """End one session of an identity and close its sockets everywhere."""
    return {"identity": identity, "reason": reason, "ended": server_api().disconnect(identity, reason, sessionId)}, 200
