"""What the store tests share: their identity and a stored session."""

from __future__ import annotations

from vora.store.sessions import NewSession, SessionStore

IDENTITY = "910111000"


def create(store: SessionStore, sid: str, subject: str = "alice") -> list[str]:
    """Create a session with a token hash derived from its id; return the ids of the sessions it evicted."""
    return store.create(IDENTITY, sid, f"hash-{sid}", NewSession(subject, "WebSocket", False, frozenset(), "*")).evicted
