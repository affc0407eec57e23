"""Ownership rules: the telephony side's directory of who owns which identity, as VORA keeps a copy of it.

The telephony side owns the directory; VORA's copy in Redis is provisioned from it (server API or
CLI) and can be rebuilt from it at any time. A revocation ends the user's sessions on the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import redis

from vora.store.directory import Directory
from vora.store.sessions import SessionStore

REVOKED = "revoked"


class DirectoryState(Enum):
    """What Redis holds of the directory."""

    PROVISIONED = "provisioned"  # written since Redis last started empty
    EMPTY = "empty"  # nothing written since Redis last started empty: never provisioned, or lost before this worker
    LOST = "lost"  # this worker saw it provisioned, and Redis has since lost it (restarted empty, flushed)


@dataclass(frozen=True)
class DirectoryStatus:
    """The directory's state and when it was first provisioned (ms since the epoch)."""

    state: DirectoryState
    provisioned_at: int | None


@dataclass(frozen=True)
class OwnershipChange:
    """What provisioning a user changed: identities given and taken, sessions ended on those taken."""

    subject: str
    identities: list[str]
    added: list[str]
    removed: list[str]
    ended: list[str]


class Ownership:
    """Provision and revoke ownership, ending the sessions a revocation leaves without an owner."""

    def __init__(self, directory: Directory, sessions: SessionStore) -> None:
        self._directory = directory
        self._sessions = sessions
        self._seen_provisioned = False

    def identities_of(self, subject: str) -> list[str]:
        """Return the identities a user owns, sorted."""
        return self._directory.identities_of(subject)

    def grant(self, subject: str, identities: list[str]) -> int:
        """Give a user identities; return how many were new."""
        return self._directory.add(subject, identities)

    def _end(self, subject: str, identities: list[str]) -> list[str]:
        ended: list[str] = []
        for identity in identities:
            ended += self._sessions.end_for_subject(identity, subject, REVOKED)
        return ended

    def revoke(self, subject: str, identities: list[str]) -> tuple[int, list[str]]:
        """Take identities from a user and end its sessions on them; return how many it had and the sessions ended."""
        # Removed first: on standalone and Sentinel, setup checks ownership inside its script, so no
        # session can be opened on a revoked identity once the sessions below are ended.
        removed = self._directory.remove(subject, identities)
        return removed, self._end(subject, identities)

    def replace(self, subject: str, identities: list[str]) -> OwnershipChange:
        """Make a user own exactly these identities, ending its sessions on those it loses."""
        wanted = sorted(set(identities))
        replaced = self._directory.replace(subject, wanted)
        return OwnershipChange(subject, wanted, replaced.added, replaced.removed, self._end(subject, replaced.removed))

    def status(self, client: redis.Redis | None = None) -> DirectoryStatus:
        """Tell whether the directory is provisioned, empty, or lost since this worker saw it provisioned."""
        provisioned_at = self._directory.provisioned_at(client)
        if provisioned_at is not None:
            self._seen_provisioned = True
            return DirectoryStatus(DirectoryState.PROVISIONED, provisioned_at)
        return DirectoryStatus(DirectoryState.LOST if self._seen_provisioned else DirectoryState.EMPTY, None)
