"""Tests of the push rules: registering a device at setup, which events wake one, the webhook bodies."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from tests.harness.push import webhook_schema
from tests.harness.rest import SETUP, assert_error, session_hashes, setup_session
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.push import rules as push
from vora.store import keys
from vora.store.push import HoldUp, HoldUpRef, PushRegistration
from vora.tools.spec_check import WEBHOOKS_FILE, check_webhooks

Headers = Callable[..., dict[str, str]]
Provision = Callable[[str, list[str]], None]
IDENTITY = "910111000"
DEVICE = {"platform": "apns", "deviceToken": "a" * 64, "appId": "com.example.vora"}


class TestRegistration:
    """SetupIn.push through the real app."""

    def test_holdup_session_stores_its_device(
        self, client: FlaskClient, auth: Headers, provision: Provision, redisdb: redis.Redis
    ) -> None:
        """A holdUpMode setup with a push object stores the registration in the session hash."""
        provision("alice", [IDENTITY])
        setup_session(client, auth("alice"), holdUpMode=True, push=DEVICE)
        [stored] = session_hashes(redisdb)
        assert stored[b"pushPlatform"] == b"apns"
        assert stored[b"pushDeviceToken"] == b"a" * 64
        assert stored[b"pushAppId"] == b"com.example.vora"

    def test_holdup_without_push_is_allowed_and_stores_none(
        self, client: FlaskClient, auth: Headers, provision: Provision, redisdb: redis.Redis
    ) -> None:
        """A holdUpMode session without a push object is accepted (such a session is never pushed)."""
        provision("alice", [IDENTITY])
        setup_session(client, auth("alice"), holdUpMode=True)
        [stored] = session_hashes(redisdb)
        assert b"pushDeviceToken" not in stored

    @pytest.mark.parametrize("hold_up", [False, None])
    def test_push_without_holdup_is_refused(
        self, client: FlaskClient, auth: Headers, provision: Provision, redisdb: redis.Redis, hold_up: bool | None
    ) -> None:
        """A push object without holdUpMode true is a 400 that names the rule, and no session is opened."""
        provision("alice", [IDENTITY])
        body: dict[str, Any] = {"connectionType": "WebSocket", "identity": IDENTITY, "push": DEVICE}
        if hold_up is not None:
            body["holdUpMode"] = hold_up
        error = assert_error(client.post(SETUP, json=body, headers=auth("alice")), 400, "holdUpMode")
        assert DEVICE["deviceToken"] not in error["message"]
        assert session_hashes(redisdb) == []

    @pytest.mark.parametrize(
        ("device", "fragment"),
        [
            ({"platform": "sms", "deviceToken": "t"}, "platform"),
            ({"platform": "fcm"}, "deviceToken"),
            ({"platform": "fcm", "deviceToken": ""}, "deviceToken"),
            ({"platform": "fcm", "deviceToken": "x" * 4097}, "deviceToken"),
            ({"platform": "fcm", "deviceToken": "has space"}, "deviceToken"),
            ({"platform": "fcm", "deviceToken": "t", "appId": "bad app"}, "appId"),
            ({"platform": "fcm", "deviceToken": "t", "voip": True}, "voip"),
        ],
    )
    def test_bad_push_objects_are_refused(
        self,
        client: FlaskClient,
        auth: Headers,
        provision: Provision,
        redisdb: redis.Redis,
        device: dict[str, Any],
        fragment: str,
    ) -> None:
        """A push object that breaks PushRegistration is a 400 naming the field, and nothing is stored."""
        provision("alice", [IDENTITY])
        body = {"connectionType": "WebSocket", "identity": IDENTITY, "holdUpMode": True, "push": device}
        assert_error(client.post(SETUP, json=body, headers=auth("alice")), 400, fragment)
        assert session_hashes(redisdb) == []

    def test_logout_removes_the_registration(
        self, client: FlaskClient, auth: Headers, provision: Provision, redisdb: redis.Redis
    ) -> None:
        """Ending the session deletes its hash, device token included."""
        provision("alice", [IDENTITY])
        setup_session(client, auth("alice"), holdUpMode=True, push=DEVICE)
        assert client.post(f"/vora/logout/{IDENTITY}", headers=auth("alice")).status_code == 200
        assert session_hashes(redisdb) == []
        assert not list(redisdb.scan_iter(match=keys.identity_prefix(IDENTITY) + "session:*"))

    def test_registration_repr_hides_the_device_token(self) -> None:
        """A registration never shows its device token when printed or logged."""
        assert "secret-token" not in repr(PushRegistration("fcm", "secret-token", None))


class TestTrigger:
    """Which events wake a device."""

    @pytest.mark.parametrize(
        ("event_type", "data", "wakes"),
        [
            ("callRinging", {"callId": "c", "direction": "inbound"}, True),
            ("callRinging", {"callId": "c", "direction": "outbound"}, False),
            ("callRinging", {"callId": "c"}, False),
            ("callAnswered", {"callId": "c", "direction": "inbound"}, False),
            ("presence", {"status": "busy"}, False),
        ],
    )
    def test_only_an_inbound_ringing_call_wakes(self, event_type: str, data: dict[str, Any], wakes: bool) -> None:
        """Only callRinging with direction inbound is a terminating call."""
        assert push.is_terminating_call(event_type, data) is wakes


class TestBodies:
    """The bodies VORA posts match spec/vora-webhooks.yaml."""

    REF = HoldUpRef(IDENTITY, "s" * 32, "call-1")
    HOLDUP = HoldUp("1795396666123-4", 1795396666123, 1795396696123, "+34602128708")

    def test_webhooks_document_passes_its_checks(self) -> None:
        """The webhooks document is valid OpenAPI 3.1 and names the code's webhooks and platforms."""
        assert check_webhooks(DEFAULT_SPEC_DIR) == []

    def test_webhooks_check_reports_drift(self, tmp_path: Path) -> None:
        """A renamed webhook or a platform missing from vora.yaml is reported."""
        for name in ("vora.yaml", WEBHOOKS_FILE):
            shutil.copy(DEFAULT_SPEC_DIR / name, tmp_path / name)
        hooks = tmp_path / WEBHOOKS_FILE
        text = (
            hooks.read_text().replace("  holdUpReady:\n", "  holdUpDone:\n").replace("[apns, fcm, webpush]", "[apns]")
        )
        hooks.write_text(text)
        problems = check_webhooks(tmp_path)
        assert any("holdUpDone" in p for p in problems)
        assert any("platforms" in p for p in problems)

    def test_push_body_matches_its_schema(self) -> None:
        """A push notification body validates and carries the call, the session and the device."""
        body = push.push_body(self.REF, PushRegistration("fcm", "tok", None), self.HOLDUP)
        webhook_schema("PushNotification").validate(body)
        assert body["expiresAt"] == "2026-11-23T01:18:16.123Z"

    def test_ready_body_reports_the_wake_up_time(self) -> None:
        """A ready signal validates and reports milliseconds from push and from ring."""
        holdup = replace(self.HOLDUP, pushed_at=1795396666500, taken_at=1795396667750, outcome=push.HOLDUP_READY)
        body = push.readiness_body(self.REF, holdup)
        webhook_schema("HoldUpReady").validate(body)
        assert (body["wakeUpMs"], body["sinceRingMs"]) == (1250, 1627)

    @pytest.mark.parametrize("reason", ["timeout", "pushFailed", "rateLimited"])
    def test_not_ready_body_says_why(self, reason: str) -> None:
        """A not-ready signal validates and carries its reason."""
        holdup = replace(self.HOLDUP, taken_at=1795396696123, outcome=push.HOLDUP_NOT_READY, reason=reason)
        body = push.readiness_body(self.REF, holdup)
        webhook_schema("HoldUpNotReady").validate(body)
        assert body["reason"] == reason

    def test_delivery_ids_are_stable_per_call_and_kind(self) -> None:
        """The same call and webhook always get the same delivery id, so receivers can drop repeats."""
        again = push.delivery_id(HoldUpRef(IDENTITY, "s" * 32, "call-1"), push.PUSH_NOTIFICATION)
        assert push.delivery_id(self.REF, push.PUSH_NOTIFICATION) == again
        assert push.delivery_id(self.REF, push.HOLDUP_READY) != again
