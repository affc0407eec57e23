"""Handlers of the server API's Directory tag: the telephony side provisions and revokes ownership."""

from __future__ import annotations

from typing import Any

from vora.ownership import OwnershipChange
from vora.server_api import rfc3339_ms
from vora.state import vora_state

Body = dict[str, Any]


def _change(change: OwnershipChange) -> Body:
    return {
        "user": change.subject,
        "identities": change.identities,
        "added": change.added,
        "removed": change.removed,
        "ended": change.ended,
    }


# The path parameter is `subject`: Connexion hands a handler's `user` argument the caller's token subject.


def userIdentities(subject: str) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
    """List the identities a user owns."""
    return {"user": subject, "identities": vora_state().ownership.identities_of(subject)}, 200


def setUserIdentities(subject: str, body: Body) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
    """Make a user own exactly the identities given, ending its sessions on those it loses."""
    return _change(vora_state().ownership.replace(subject, body["identities"])), 200


def grantIdentity(subject: str, identity: str) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
    """Give a user one identity."""
    added = vora_state().ownership.grant(subject, [identity]) > 0
    return {"user": subject, "identity": identity, "added": added}, 200


def revokeIdentity(subject: str, identity: str) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
    """Take one identity from a user and end its sessions on it."""
    removed, ended = vora_state().ownership.revoke(subject, [identity])
    return {"user": subject, "identity": identity, "removed": removed > 0, "ended": ended}, 200


def directoryStatus() -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
    """Tell whether the directory is provisioned, empty or lost."""
    status = vora_state().ownership.status()
    when = None if status.provisioned_at is None else rfc3339_ms(status.provisioned_at)
    return {"state": status.state.value, "provisionedAt": when}, 200


def syncDirectory(body: Body) -> tuple[Body, int]:  # noqa: N802 - named by the spec's operationId
    """Set the identities of every listed user, each as setUserIdentities does."""
    ownership = vora_state().ownership
    return {"users": [_change(ownership.replace(u["user"], u["identities"])) for u in body["users"]]}, 200
