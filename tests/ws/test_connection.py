"""Tests of the per-socket filter: subscription and scopes together."""

from __future__ import annotations

from vora.catalog import SUBSCRIBABLE_EVENTS
from vora.devkeys import ALL_SCOPES
from vora.ws.connection import allowed_types


def test_all_scopes_and_subscribe_all_allow_every_event() -> None:
    """Subscribe-all with every scope admits the whole catalogue."""
    assert allowed_types("*", frozenset(ALL_SCOPES)) == frozenset(SUBSCRIBABLE_EVENTS)


def test_scopes_remove_families() -> None:
    """Without scope.vora.recording and scope.vora.presence only call events remain."""
    allowed = allowed_types("*", frozenset({"scope.vora.identities", "scope.vora.calls"}))
    assert allowed == {t for t in SUBSCRIBABLE_EVENTS if t.startswith("call")}


def test_subscription_and_scopes_intersect() -> None:
    """A subscription to presence and callRinging without the presence scope keeps callRinging only."""
    assert allowed_types("presence,callRinging", frozenset({"scope.vora.calls"})) == {"callRinging"}


def test_empty_subscription_allows_nothing() -> None:
    """An unsubscribed session receives no stream event."""
    assert allowed_types("", frozenset(ALL_SCOPES)) == frozenset()
