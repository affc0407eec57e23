"""Tests of the bus notices: what the Lua scripts publish decodes into typed notices."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from tests.harness.store import IDENTITY, create
from vora.store import keys
from vora.store.bus import ControlNotice, EventNotice, decode_notice
from vora.store.codec import text
from vora.store.sessions import SessionStore
from vora.store.streams import StreamStore


def next_message(pubsub: Any) -> tuple[str, bytes]:
    """Return the channel and data of the next published message."""
    for _ in range(50):
        message = pubsub.get_message(timeout=1.0)
        if message and message["type"] == "message":
            return text(message["channel"]), message["data"]
    raise AssertionError("nothing was published")


def test_publish_event_notice_decodes_to_the_stored_event(redisdb: redis.Redis) -> None:
    """The notice PUBLISH_EVENT sends decodes into the very event XRANGE reads back."""
    pubsub = redisdb.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.EVENTS_CHANNEL)
    streams = StreamStore(redisdb, max_length=100, max_age_seconds=3600)
    streams.append(IDENTITY, "presence", "2026-11-23T01:12:12.798Z", '{"status":"busy"}')
    notice = decode_notice(*next_message(pubsub))
    assert notice == EventNotice(IDENTITY, streams.read_after(IDENTITY, None, 1)[0])
    pubsub.close()


@pytest.mark.usefixtures("owners")
def test_session_scripts_notices_decode_to_control_notices(redisdb: redis.Redis) -> None:
    """Subscribing and logging out announce notices naming the sessions, the subscription and the reason."""
    pubsub = redisdb.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.CONTROL_CHANNEL)
    store = SessionStore(redisdb, ttl_seconds=60, max_per_user=5)
    create(store, "s1")
    store.set_subscription(IDENTITY, "alice", "presence")
    assert decode_notice(*next_message(pubsub)) == ControlNotice(
        IDENTITY, "subscription", frozenset({"s1"}), "logout", "presence"
    )
    store.end_for_subject(IDENTITY, "alice", "revoked")
    assert decode_notice(*next_message(pubsub)) == ControlNotice(
        IDENTITY, "terminate", frozenset({"s1"}), "revoked", ""
    )
    pubsub.close()


def test_a_notice_vora_did_not_write_is_ignored() -> None:
    """Garbage or an unknown channel decodes to None, never an exception in the worker's reader."""
    assert decode_notice(keys.EVENTS_CHANNEL, b"not json") is None
    assert decode_notice(keys.EVENTS_CHANNEL, b'{"identity": "x"}') is None
    assert decode_notice("elsewhere", b'{"identity": "x"}') is None
