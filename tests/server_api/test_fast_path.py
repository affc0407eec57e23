"""Tests of the server API's fast path: the same answers as the full Connexion stack, on real Redis."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
import redis
from flask import Flask

from tests.harness.server_api import ROTATED_KEY, SERVER_KEY
from vora.app import create_app
from vora.core.settings import Settings
from vora.http.fast_path import FastPath, TwinCheck

BASE = "/vora/server/v1"
IDENTITY = "910111000"
# Values that differ between any two answers: the moment of an error or an event, where in time an event went.
VOLATILE_FIELDS = ("timestamp", "eventId", "provisionedAt")
EVENT_ID = re.compile(rb"\b[0-9]{13}-[0-9]+\b")  # an eventId a message names
JWT_LIKE = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"

Request = tuple[str, str, dict[str, str], bytes | None]


def _event(event_type: str = "callRinging", **extra: Any) -> bytes:
    data = extra.pop("data", {"callId": "c-1", "from": "+34602128708"})
    return json.dumps({"type": event_type, "data": data, **extra}).encode()


def publish_cases() -> list[Request]:
    """Return publishEvent requests, well-formed and not: (method, path, headers, body)."""
    key = {"Authorization": f"Bearer {SERVER_KEY}", "Content-Type": "application/json"}
    path = f"{BASE}/identities/{IDENTITY}/events"
    return [
        ("POST", path, key, _event()),
        ("POST", path, {**key, "Authorization": f"Bearer {ROTATED_KEY}"}, _event("presence", data={"status": "busy"})),
        ("POST", path, {**key, "Content-Type": "application/json; charset=utf-8"}, _event()),
        ("POST", path, key, _event(idempotencyKey="pbx-1")),
        ("POST", path, key, _event(idempotencyKey="pbx-1")),  # a retry: the first event again, duplicate
        ("POST", path, key, _event(idempotencyKey="pbx-1", data={"callId": "c-2"})),  # reused for another: 409
        ("POST", path, key, _event(idempotencyKey="bad key")),
        ("POST", path, key, _event(timestamp="2026-12-06T04:00:00Z")),
        ("POST", path, key, _event(timestamp="2026-12-06 04:00")),
        ("POST", path, key, _event(timestamp="2026-12-06T04:00:00")),  # no zone: the catalogue refuses it
        ("POST", path, key, _event("callExploded")),
        ("POST", path, key, _event("recordingStarted", data={"callId": "c-1"})),
        ("POST", path, key, _event(data={"callId": "c-1", "extra": 1})),
        ("POST", path, key, _event(data={"callId": "c" * 129})),
        ("POST", path, key, _event(data={"callId": "c-1", "durationSeconds": 1.0})),
        ("POST", path, key, _event(data={"callId": "c-1", "durationSeconds": -1})),
        ("POST", path, key, _event(data={"callId": "c-1", "durationSeconds": 12})),
        ("POST", path, key, _event(data={"reason": "x" * 128, "callId": "\u2028"})),
        ("POST", path, key, json.dumps({"type": "callRinging"}).encode()),
        ("POST", path, key, json.dumps({"data": {"callId": "c-1"}}).encode()),
        ("POST", path, key, json.dumps([1]).encode()),
        ("POST", path, key, b"null"),
        ("POST", path, key, b"{not json"),
        ("POST", path, key, b"[" * 5000 + b"]" * 5000),
        ("POST", path, key, b""),
        ("POST", path, {**key, "Content-Type": "text/plain"}, _event()),
        ("POST", path, {"Authorization": key["Authorization"]}, _event()),
        ("POST", path, {**key, "Authorization": "Bearer not-a-configured-key"}, _event()),
        ("POST", path, {**key, "Authorization": f"Bearer {JWT_LIKE}"}, _event()),
        ("POST", path, {**key, "Authorization": "Basic YTpi"}, _event()),
        ("POST", path, {**key, "Authorization": "Bearer"}, _event()),
        ("POST", path, {"Content-Type": "application/json"}, _event()),
        ("POST", path + "?unexpected=1", key, _event()),
        ("POST", path + "/", key, _event()),
        ("PUT", path, key, _event()),
        ("POST", f"{BASE}/identities/_bad/events", key, _event()),
        ("POST", f"{BASE}/identities/{'9' * 65}/events", key, _event()),
        ("POST", f"{BASE}/identities/{IDENTITY}%0A/events", key, _event()),
        ("POST", f"{BASE}/identities/%C3%A9/events", key, _event()),
        ("POST", f"{BASE}/identities/a%2Fb/events", key, _event()),
        ("POST", f"{BASE}/identities/a.b@c+d-e/events", key, _event()),
        ("POST", path, key, _event(timestamp="2026-12-06t04:00:00.5z")),
        ("POST", path, key, _event(timestamp="2026-12-06T04:00:00-03:30")),
        ("POST", path, key, _event(timestamp="2026-12-06T04:00:00Z\n")),  # rfc3339-validator's $ lets it through
        ("POST", path, key, _event(timestamp="2026-02-30T04:00:00Z")),
        ("POST", path, key, _event(timestamp="2026-12-31T23:59:60Z")),
        ("POST", path, key, _event(timestamp="2026-12-06T04:00:00+24:00")),
        ("POST", path, key, _event(timestamp="2026-12-06T04:00Z")),
        ("POST", path, key, _event(data={"callId": "c-1", "durationSeconds": 2**64 + 1})),
        ("POST", path, key, _event(data={"callId": "c-1", "durationSeconds": -(2**64)})),
        ("POST", path, key, _event(data={"callId": "c-1", "durationSeconds": math.nan})),  # NaN, as Python parses
        ("POST", path, key, _event(data={"callId": "c-1", "durationSeconds": math.inf})),  # Infinity
    ]


def other_cases() -> list[Request]:
    """Return requests of the server API's other fast operations, well-formed and not."""
    key = {"Authorization": f"Bearer {SERVER_KEY}", "Content-Type": "application/json"}
    users = f"{BASE}/users/alice/identities"
    batch = {"events": [{"identity": IDENTITY, "type": "presence", "data": {"status": "away"}}, {"identity": "_"}]}
    return [
        ("PUT", users, key, json.dumps({"identities": [IDENTITY]}).encode()),
        ("PUT", users, key, json.dumps({"identities": ["_"]}).encode()),
        ("GET", users, key, None),
        ("PUT", f"{users}/602128708", key, None),
        ("DELETE", f"{users}/602128708", key, None),
        ("DELETE", f"{users}/602128708", key, None),
        ("GET", f"{BASE}/identities/{IDENTITY}/online", key, None),
        ("GET", f"{BASE}/identities/{IDENTITY}/sessions", key, None),
        ("GET", f"{BASE}/identities/_/sessions", key, None),
        ("GET", f"{BASE}/directory", key, None),
        ("POST", f"{BASE}/events/batch", key, json.dumps(batch).encode()),
        ("POST", f"{BASE}/events/batch", key, json.dumps({"events": "no"}).encode()),
        ("GET", f"{BASE}/directory", {}, None),
    ]


def answers(app: Flask, port: int, requests: list[Request]) -> list[tuple[int, Any, Any]]:
    """Send requests in turn through the app's whole WSGI stack on the server API's listener; volatile parts out."""
    client = app.test_client()
    answered = []
    for method, path, headers, body in requests:
        response = client.open(path, method=method, headers=headers, data=body, base_url=f"http://127.0.0.1:{port}")
        kept = sorted((k, v) for k, v in response.headers.items() if k.lower() != "x-request-id")
        payload: Any = response.get_data()
        if response.mimetype == "application/json" and payload:
            payload = json.loads(EVENT_ID.sub(b"<eventId>", payload))
            if isinstance(payload, dict):
                payload = {k: (k in VOLATILE_FIELDS) or v for k, v in payload.items()}
                if isinstance(payload.get("results"), list):
                    payload["results"] = [
                        {k: (k in VOLATILE_FIELDS) or v for k, v in r.items()} for r in payload["results"]
                    ]
        answered.append((response.status_code, kept, payload))
    return answered


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    """Return settings that serve the server API with two keys."""
    return settings.with_changes(server_api_keys=(SERVER_KEY, ROTATED_KEY))


@pytest.mark.parametrize(
    ("cases", "first_statuses"),
    [(publish_cases, [200, 200, 200, 200, 200, 409]), (other_cases, [200, 400, 200, 200, 200, 200])],
)
def test_answers_every_request_as_the_full_stack_does(
    keyed: Settings, redisdb: redis.Redis, cases: Any, first_statuses: list[int]
) -> None:
    """Each request, well-formed or not, in turn on a fresh Redis, gets what the full Connexion stack answers."""
    requests = cases()
    fast = answers(create_app(keyed), keyed.server_api_port, requests)
    redisdb.flushall()
    full = answers(create_app(keyed, fast_path=False), keyed.server_api_port, requests)
    for request, fast_answer, full_answer in zip(requests, fast, full, strict=True):
        assert fast_answer == full_answer, request[:2]
    assert [status for status, _, _ in fast[:6]] == first_statuses


def test_serves_publish_event_on_the_fast_path(keyed: Settings, redisdb: redis.Redis) -> None:
    """A well-formed publishEvent is answered by the fast path, named as its operation, without the app."""
    app = create_app(keyed)
    server_app = app.wsgi_app.app._server.app  # type: ignore[attr-defined] # log middleware, dispatcher, body limit
    fast = server_app.wsgi_app.app
    assert isinstance(fast, FastPath)
    handed: list[str] = []
    fallback = fast._fallback

    def counted(environ: dict[str, Any], start_response: Any) -> Any:
        handed.append(environ["PATH_INFO"])
        return fallback(environ, start_response)

    fast._fallback = counted
    requests = publish_cases()
    statuses = [status for status, _, _ in answers(app, keyed.server_api_port, requests[:3])]
    assert statuses == [200, 200, 200]
    assert handed == []
    answers(app, keyed.server_api_port, [requests[10]])
    assert handed == [f"{BASE}/identities/{IDENTITY}/events"]


def publish_bodies() -> list[Any]:
    """Return publishEvent bodies that probe each rule of PublishRequest, on both sides of it."""
    call = {"callId": "c-1", "from": "+34602128708"}
    bodies: list[Any] = [None, [], "x", 1, {}, {"type": "callRinging"}, {"data": call}]
    types: list[Any] = [
        "callRinging",
        "callEnded",
        "presence",
        "recordingStarted",
        "recordingFailed",
        "callExploded",
        "",
    ]
    types += [1, None, True, ["callRinging"], {"type": "callRinging"}, "CALLRINGING", "callRinging\n"]
    datas: list[Any] = [call, {"status": "busy"}, {"callId": "c-1", "recordingId": "r-1"}, {}, None, [], "c-1"]
    durations: list[Any] = [0, 1, -1, 1.0, 1.5, -0.0, True, False, "1", 10**30, -(10**30), 2**63, 2**64, -(2**63) - 1]
    durations += [2**53 + 1, 1e300, math.nan, math.inf, -math.inf, None]
    datas += [{"callId": "c-1", "durationSeconds": n} for n in durations]
    datas += [{"callId": value} for value in ("", "c" * 128, "c" * 129, 1, None, "\u2028", "\ud800")]
    datas += [{"status": value} for value in ("available", "offline", "Offline", 1)]
    datas += [{"status": "away", "note": "n" * 256}, {"status": "away", "note": "n" * 257}, {**call, "extra": 1}]
    bodies += [{"type": t, "data": d} for t in types for d in datas]
    for extra in (
        {"timestamp": "2026-12-06T04:00:00Z"},
        {"timestamp": "2026-12-06T04:00:00.123+01:00"},
        {"timestamp": "2026-12-06 04:00:00Z"},
        {"timestamp": "2026-12-06T04:00:00"},
        {"timestamp": "yesterday"},
        {"timestamp": "2026-12-06t04:00:00z"},
        {"timestamp": "2026-12-06T04:00:00.123456789-12:59"},
        {"timestamp": "2024-02-29T00:00:00Z"},
        {"timestamp": "2026-02-29T00:00:00Z"},
        {"timestamp": "2026-12-31T23:59:60Z"},
        {"timestamp": "2026-12-06T04:00:00+24:00"},
        {"timestamp": "2026-12-06T04:00Z"},
        {"timestamp": "2026-12-06T04:00:00Z\n"},
        {"timestamp": "\uff12026-12-06T04:00:00Z"},
        {"timestamp": "2026-12-06T04:00:00\ud800Z"},
        {"timestamp": 1},
        {"timestamp": None},
        {"idempotencyKey": "pbx-7f3a-000123"},
        {"idempotencyKey": "k" * 128},
        {"idempotencyKey": "k" * 129},
        {"idempotencyKey": ""},
        {"idempotencyKey": "a b"},
        {"idempotencyKey": 1},
        {"extra": 1},
        {"type": "presence"},
    ):
        bodies += [
            {"type": t, "data": d, **extra} for t in ("callRinging", "presence") for d in (call, {"status": "busy"})
        ]
    return bodies


def test_checks_publish_bodies_as_connexions_validator_does(keyed: Settings, redisdb: redis.Redis) -> None:
    """The fast check of a publishEvent body (its discriminator's branch only) is Connexion's validator's verdict."""
    fast = create_app(keyed).wsgi_app.app._server.app.wsgi_app.app  # type: ignore[attr-defined] # as above
    (publish,) = [operation for _, _, operation in fast._templated if operation.operation_id == "publishEvent"]
    assert publish.body_is_valid is not None
    # Every branch, with its date-time timestamp and integer durationSeconds, is checked by jsonschema_rs.
    branch_checks = publish.body_is_valid.args[1]
    assert len(branch_checks) == 15
    assert all(isinstance(check, TwinCheck) for check in branch_checks.values())
    bodies = publish_bodies()
    verdicts = [publish.body_validator.is_valid(body) for body in bodies]
    assert [publish.body_is_valid(body) for body in bodies] == verdicts
    assert 0 < sum(verdicts) < len(bodies)
