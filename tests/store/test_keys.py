"""Tests of the Redis key layout."""

from __future__ import annotations

from redis.crc import key_slot

from vora.store import keys

IDENTITY = "910111000"


def test_identity_keys_share_one_cluster_slot() -> None:
    """Every key of one identity hashes to the same Redis Cluster slot."""
    names = [
        keys.sessions_index(IDENTITY),
        keys.session(IDENTITY, "abc"),
        keys.websocket_token(IDENTITY, "f" * 64),
        keys.session_ended(IDENTITY, "abc"),
        keys.event_stream(IDENTITY),
        keys.event_sequence(IDENTITY),
    ]
    assert len({key_slot(name.encode()) for name in names}) == 1


def test_user_keys_escape_braces() -> None:
    """A brace in a user id cannot end the hash tag early."""
    name = keys.user_identities("evil}user{")
    assert name.count("{") == 1
    assert name.count("}") == 1


def test_different_identities_spread_over_slots() -> None:
    """Different identities do not all share a slot."""
    slots = {key_slot(keys.sessions_index(str(900000000 + n)).encode()) for n in range(50)}
    assert len(slots) > 40
