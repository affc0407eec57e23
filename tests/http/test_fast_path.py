"""Tests of the fast path: the same answers as the full Connexion stack, from the same spec, real Redis and tokens."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
import redis
from flask import Flask
from werkzeug.test import EnvironBuilder

from tests.harness.tokens import TokenFactory
from vora.app import create_app
from vora.core.settings import Settings
from vora.http.connexion import VoraFlaskApi
from vora.http.fast_path import (
    JSON_MIMETYPE,
    FastPath,
    TwinCheck,
    acceptance_check,
    body_check,
    discriminated_branches,
    routes_of,
    shared_meaning,
)
from vora.http.validation import RuleNamingBodyValidator
from vora.rest.app import API_EXTENSION
from vora.services import services_of

Provision = Callable[[str, list[str]], None]
SETUP = "/vora/identity/setup"
IDENTITY = "910111000"
# Values that differ between any two answers: the moment of an error, a fresh WebSocket token, the request id.
VOLATILE_FIELDS = ("timestamp", "webSocketToken")


def cases(token: str, bare: str) -> list[tuple[str, str, dict[str, str], bytes | None]]:
    """Return requests of the fast operations, well-formed and not: (method, path, headers, body)."""
    bearer = {"Authorization": f"Bearer {token}"}
    json_type = {"Content-Type": "application/json"}
    good = json.dumps({"connectionType": "WebSocket", "identity": IDENTITY}).encode()
    return [
        ("GET", "/vora/identity", bearer, None),
        ("GET", "/vora/identity", {"Authorization": f"Bearer {bare}"}, None),
        ("GET", "/vora/identity", {}, None),
        ("GET", "/vora/identity", {"Authorization": "Bearer"}, None),
        ("GET", "/vora/identity", {"Authorization": "Basic YTpi"}, None),
        ("GET", "/vora/identity", {"Authorization": "Bearer not.a.jwt"}, None),
        ("GET", "/vora/identity?unexpected=1", bearer, None),
        ("HEAD", "/vora/identity", bearer, None),
        ("POST", SETUP, {**bearer, **json_type}, good),
        ("POST", SETUP, {**bearer, "Content-Type": "application/json; charset=utf-8"}, good),
        ("POST", SETUP, {**bearer, **json_type}, json.dumps({"connectionType": "WebSocket"}).encode()),
        ("POST", SETUP, {**bearer, **json_type}, json.dumps({"connectionType": "Fax", "identity": IDENTITY}).encode()),
        ("POST", SETUP, {**bearer, **json_type}, json.dumps({"connectionType": "WebSocket", "identity": "1"}).encode()),
        ("POST", SETUP, {**bearer, **json_type}, b"{not json"),
        ("POST", SETUP, {**bearer, **json_type}, b"null"),
        ("POST", SETUP, {**bearer, **json_type}, b"[" * 5000 + b"]" * 5000),
        ("POST", SETUP, {**bearer, **json_type}, b""),
        ("POST", SETUP, {**bearer, "Content-Type": "text/plain"}, good),
        ("POST", SETUP, bearer, good),
        ("POST", SETUP, {"Authorization": f"Bearer {bare}", **json_type}, good),
        ("POST", SETUP, json_type, good),
    ]


def answer(app: Flask, method: str, path: str, headers: dict[str, str], body: bytes | None) -> tuple[int, Any, Any]:
    """Send one request through the app's whole WSGI stack; return its status, headers and body, volatile parts out."""
    response = app.test_client().open(path, method=method, headers=headers, data=body)
    kept = sorted((k, v) for k, v in response.headers.items() if k.lower() != "x-request-id")
    payload: Any = response.get_data()
    if response.mimetype == "application/json" and payload:
        payload = json.loads(payload)
        if isinstance(payload, dict):
            payload = {k: (k in VOLATILE_FIELDS) or v for k, v in payload.items()}
    return response.status_code, kept, payload


@pytest.fixture
def full(settings: Settings, redisdb: redis.Redis) -> Flask:
    """Build the app without the fast path: every request through Flask and Connexion."""
    return create_app(settings, fast_path=False)


def test_answers_every_request_as_the_full_stack_does(
    app: Flask, full: Flask, make_token: TokenFactory, provision: Provision
) -> None:
    """Each request, well-formed or not, gets the status, headers and body the full Connexion stack gives it."""
    provision("alice", ["602128708", IDENTITY])
    token, bare = make_token("alice"), make_token("alice", scopes=())
    for method, path, headers, body in cases(token, bare):
        assert answer(app, method, path, headers, body) == answer(full, method, path, headers, body), (method, path)


def test_answers_a_handlers_error_as_the_full_stack_does(
    app: Flask, full: Flask, make_token: TokenFactory, provision: Provision
) -> None:
    """A handler's refusal (no identity, an identity not the caller's) comes out of the app's own error handlers."""
    provision("alice", [IDENTITY])
    headers = {"Authorization": f"Bearer {make_token('nobody')}", "Content-Type": "application/json"}
    setup = json.dumps({"connectionType": "WebSocket", "identity": IDENTITY}).encode()
    for method, path, body in (("GET", "/vora/identity", None), ("POST", SETUP, setup)):
        fast = answer(app, method, path, headers, body)
        assert fast == answer(full, method, path, headers, body)
        assert fast[0] == 404


def test_binds_only_the_operations_whose_spec_it_covers(app: Flask) -> None:
    """GET /identity and POST /identity/setup are fast; operations with parameters, no security or a form are not."""
    routes = _routes(app)
    assert {key: op.operation_id for key, op in routes.items()} == {
        ("GET", "/vora/identity"): "identities",
        ("POST", SETUP): "setup",
    }
    assert routes[("POST", SETUP)].body_validator is not None
    assert routes[("GET", "/vora/identity")].body_validator is None


def test_is_off_when_the_app_has_a_hook_it_does_not_know(settings: Settings, redisdb: redis.Redis) -> None:
    """An after_request hook (as flask-cors adds) turns the fast path off rather than being skipped."""
    app = create_app(settings)
    app.after_request(lambda response: response)
    assert _routes(app) == {}


def test_hands_every_other_request_to_the_app(app: Flask, make_token: TokenFactory, provision: Provision) -> None:
    """A well-formed request is answered without the app; a refused one goes to the app with its body intact."""
    provision("alice", [IDENTITY])
    handed: list[tuple[str, bytes]] = []

    def fallback(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        handed.append((environ["PATH_INFO"], environ["wsgi.input"].read()))
        start_response("418 I'm a teapot", [])
        return [b""]

    fast = FastPath(app, _routes(app), fallback, VoraFlaskApi.get_response)
    token = make_token("alice")
    body = json.dumps({"connectionType": "WebSocket", "identity": IDENTITY}).encode()
    statuses = []
    for path, auth, data in (("/vora/identity", token, b""), (SETUP, token, body), (SETUP, "bad", body)):
        environ = EnvironBuilder(
            path=path,
            method="POST" if data else "GET",
            headers=[("Authorization", f"Bearer {auth}"), ("Content-Type", "application/json")],
            data=data or None,
        ).get_environ()
        environ["wsgi.input"] = io.BytesIO(data)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            statuses.append(status)

        b"".join(fast(environ, start))
        if path == SETUP and auth == token:
            assert environ["vora.operation"] == "setup"
    assert statuses == ["200 OK", "200 OK", "418 I'm a teapot"]
    assert handed == [(SETUP, body)]


def _routes(app: Flask) -> dict[tuple[str, str], Any]:
    """Derive the fast routes of an app from the operations its Connexion API bound."""
    api = app.extensions[API_EXTENSION]
    return routes_of(app, api.base_path, iter(api.added_operations))


def setup_bodies() -> list[Any]:
    """Return setup bodies that probe each rule of SetupIn, on both sides of it."""
    base = {"connectionType": "WebSocket", "identity": IDENTITY}
    push = {"platform": "apns", "deviceToken": "a" * 64}
    identities = ["9", "a" * 64, "a" * 65, "910111000\n", "\n910111000", "é", "9 1", "_9", "9.@+-_", "", "\uff19"]
    tokens = ["", "a b", "\x7f", "~" * 4096, "~" * 4097, "é", "\u2028"]
    bodies: list[Any] = [None, [], "x", 1, {}, base, {**base, "extra": 1}, {**base, "connectionType": "websocket"}]
    bodies += [{**base, "identity": value} for value in [*identities, 9, None, ["9"]]]
    bodies += [{**base, "holdUpMode": value} for value in (True, False, 1, 0, "true", None)]
    bodies += [{**base, "holdUpMode": mode, "push": push} for mode in (True, False, 1)]
    bodies += [{**base, "push": push}, {"connectionType": "WebSocket"}, {"identity": IDENTITY}]
    bodies += [{**base, "holdUpMode": True, "push": {**push, "deviceToken": token}} for token in tokens]
    bodies += [{**base, "holdUpMode": True, "push": {**push, "platform": p}} for p in ("fcm", "webpush", "sms", 1)]
    bodies += [{**base, "holdUpMode": True, "push": {**push, "appId": a}} for a in ("com.x", "-x", "", "a" * 256)]
    bodies += [{**base, "holdUpMode": True, "push": {**push, "more": 1}}, {**base, "holdUpMode": True, "push": {}}]
    bodies += [{**base, "identity": "\ud800"}, {**base, "identity": 10**30}, {**base, "identity": float("nan")}]
    return bodies


def test_checks_setup_bodies_as_connexions_validator_does(app: Flask) -> None:
    """The fast check of a setup body gives the verdict of Connexion's own validator of the operation, rule by rule."""
    setup = _routes(app)[("POST", SETUP)]
    assert setup.body_is_valid is not None
    assert setup.body_is_valid != setup.body_validator.is_valid  # jsonschema_rs's twin is in use for SetupIn
    for body in setup_bodies():
        assert setup.body_is_valid(body) == setup.body_validator.is_valid(body), body


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "nullable": True},
        {"type": "string", "format": "email"},
        {"type": "string", "format": "uuid"},  # not in the Draft 4 checker: jsonschema lets any string through
        {"type": "string", "format": ["date-time"]},
        {"type": "object", "properties": {"id": {"type": "string", "readOnly": True}}},
        {"type": "number"},
        {"type": ["string", "number"]},
        {"type": "string", "pattern": "^\\d+$"},
        {"allOf": [{"$ref": "#/components/schemas/Identity"}]},
        {"type": "object", "additionalProperties": {"type": "string", "writeOnly": True}},
        {"minimum": 0},
        {"type": ["integer"], "minimum": 0},
        {"type": "integer", "minimum": 0.5},
        {"type": "integer", "minimum": 2**53},
        {"type": "integer", "maximum": -(2**53)},
        {"type": "integer", "minimum": True},
        {"type": "integer", "exclusiveMinimum": True},
        {"type": "integer", "minimum": 0, "exclusiveMinimum": 1},
        {"type": "integer", "maximum": 0, "exclusiveMaximum": "true"},
        {"enum": [10**30]},
        {"enum": [1.5]},
        {"enum": [[2**53]]},
        {"enum": [{"a": 0.0}]},
        {"type": "integer", "multipleOf": 2},
    ],
)
def test_leaves_schemas_read_differently_to_jsonschema(schema: dict[str, Any]) -> None:
    """A schema with a keyword jsonschema_rs could read otherwise than Connexion's validator is not given to it."""
    assert not shared_meaning(schema)
    assert not shared_meaning({"type": "object", "properties": {"a": schema}}, formats={"date-time"})


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ({"not": {"type": "number"}}, math.nan),
        ({"not": {"type": "number"}}, -math.inf),
        ({"enum": [10**30]}, 1e30),
        ({"type": "integer", "minimum": 1e30}, 10**30),  # float bounds: compared as floats
        ({"type": "integer", "maximum": float(2**63)}, 2**63 + 1),
        ({"minimum": 0}, -math.inf),
    ],
)
def test_the_schemas_left_out_are_read_differently(schema: dict[str, Any], instance: Any) -> None:
    """Each kind of schema left to jsonschema has a value jsonschema_rs calls valid and Connexion's validator not."""
    validator = _connexion_validator(schema)
    assert jsonschema_rs.Draft4Validator(schema, validate_formats=True).is_valid(instance)
    assert not validator.is_valid(instance)
    assert body_check(schema, validator) == validator.is_valid


def test_gives_jsonschema_rs_the_schemas_both_read_alike() -> None:
    """Types, enums, required, combinators, lengths, portable patterns, shared formats, small integer bounds."""
    assert shared_meaning(
        {
            "type": "object",
            "required": ["a"],
            "additionalProperties": False,
            "properties": {
                "a": {"type": "string", "pattern": "^[A-Za-z0-9][._-]{0,3}(?!\\n)$", "maxLength": 9},
                "at": {"type": "string", "format": "date-time"},
                "n": {"type": "integer", "minimum": -(2**53 - 1), "maximum": 2**53 - 1, "exclusiveMaximum": True},
                "k": {"type": ["integer", "null"], "enum": [1, None, "x", True, [2], {"b": -3}]},
            },
            "anyOf": [{"not": {"required": ["b"]}}, {"properties": {"b": {"enum": [True]}}}],
        },
        formats={"date-time"},
    )
    assert not shared_meaning({"type": "string", "format": "date-time"})  # no checker of it handed to the twin


def _connexion_validator(schema: dict[str, Any]) -> Any:
    """Build the jsonschema validator Connexion builds for a request body of this schema (its format checker too)."""
    return RuleNamingBodyValidator(schema, [JSON_MIMETYPE], None).validator


def _assert_same_verdicts(schema: dict[str, Any], bodies: list[Any]) -> None:
    """Check jsonschema_rs's twin takes the schema and gives Connexion's validator's verdict on every body."""
    validator = _connexion_validator(schema)
    check = body_check(schema, validator)
    assert isinstance(check, TwinCheck), schema
    verdicts = [validator.is_valid(body) for body in bodies]
    assert 0 < sum(verdicts) < len(bodies)
    disagreed = [(body, verdict) for body, verdict in zip(bodies, verdicts, strict=True) if check(body) != verdict]
    assert disagreed == []


def date_times() -> list[Any]:
    """Return date-time strings on both sides of RFC 3339 (as rfc3339-validator reads it), and values of other types."""
    dates = ["2026-12-06", "2024-02-29", "2026-02-29", "2026-02-30", "2026-04-31", "0000-01-01", "0001-01-01"]
    dates += [
        "9999-12-31",
        "2026-13-01",
        "2026-00-10",
        "2026-1-06",
        "20261206",
        "+2026-12-06",
        "\u0662\u0660\u0662\u0666-12-06",
    ]
    times = ["04:00:00", "23:59:59", "23:59:60", "24:00:00", "04:00", "04:00:00.1", "04:00:00.123456789"]
    times += ["04:00:00.", "04:60:00", "4:00:00", "04:00:00,5", "\uff10\uff14:00:00", "04:00:00\u0663"]
    zones = ["Z", "z", "+00:00", "-00:00", "+01:00", "+23:59", "+24:00", "-12:60", "+0100", "+01", "", "UTC", " Z"]
    values: list[Any] = [f"{d}T{t}{z}" for d, t, z in itertools.product(dates, times, zones)]
    base = "2026-12-06T04:00:00.123+01:00"
    values += [base.replace("T", sep) for sep in ("t", " ", "_", "", "\u0422", "TT")]
    values += [base + tail for tail in ("\n", "\r", "\n\n", " ", "\x00", "\u2028", "Z")]
    values += [lead + base for lead in ("\n", " ", "\ufeff")]
    values += [
        "",
        "x",
        "now",
        "2026-12-06",
        "04:00:00Z",
        "\u017f",
        "2026-12-06\u0131\u0130",
        "2026-12-06T04:00:00\u017f",
    ]
    values += [1, 1.5, None, True, [], {}, ["2026-12-06T04:00:00Z"]]
    return values


def test_checks_date_times_with_connexions_own_format_check() -> None:
    """jsonschema_rs, handed the format checker's date-time check, says what Connexion's validator says of each value.

    Under a not too, where a verdict refused wrongly would turn into one accepted wrongly.
    """
    schema = {
        "type": "object",
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "any": {"format": "date-time"},
            "notAt": {"not": {"format": "date-time"}},
        },
    }
    bodies = [{key: value} for value in date_times() for key in ("at", "any", "notAt")]
    _assert_same_verdicts(schema, bodies)
    # Why the twin is handed the format checker's own check: jsonschema_rs's date-time takes a leap second.
    leap = {"at": "2026-12-31T23:59:60Z"}
    assert jsonschema_rs.Draft4Validator(schema, validate_formats=True).is_valid(leap)
    assert not body_check(schema, _connexion_validator(schema))(leap)


def test_never_accepts_a_lone_surrogate_connexions_validator_refuses() -> None:
    """A lone surrogate, made by Python's JSON parser and unfit for UTF-8, is valid to the twin only if to both."""
    schema = {
        "type": "object",
        "properties": {
            "at": {"format": "date-time"},
            "notAt": {"not": {"format": "date-time"}},
            "s": {"type": "string"},
        },
    }
    validator = _connexion_validator(schema)
    check = body_check(schema, validator)
    assert isinstance(check, TwinCheck)
    values = ["\ud800", "2026-12-06T04:00:00Z\udc00", "\udfff2026-12-06T04:00:00Z"]
    bodies = [{key: value} for value in values for key in ("at", "notAt", "s")] + [{"\ud800": 1}]
    assert [body for body in bodies if check(body) and not validator.is_valid(body)] == []
    assert not check({"notAt": "\ud800"})  # the check Rust cannot hand the string to: the full stack decides


def integers() -> list[Any]:
    """Return values either side of bounds, beyond 2^53, 2^63 and 2^64, and the numbers that are not integers."""
    values: set[int] = set()
    for centre in (0, 1, 100, 2**31, 2**52, 2**53, 2**63, 2**64, 10**30, 10**400):
        values.update(n for d in (-2, -1, 0, 1, 2) for n in (centre + d, -centre - d))
    others: list[Any] = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, -5e-324, 2.0**53, 2.0**64, -(2.0**63), 1e300, -1e300]
    others += [math.nan, math.inf, -math.inf, True, False, None, "1", [1], {"n": 1}]
    return sorted(values) + others


BOUNDS = (0, 1, -1, 100, 2**31, -(2**31), 2**52 + 1, 2**53 - 1, -(2**53 - 1), 2**53 - 2)


def test_checks_integers_and_their_bounds_as_connexions_validator_does() -> None:
    """Integer type, minimum and maximum, exclusive or not, read alike by both, in a not too."""
    bodies = [{key: value} for value in integers() for key in ("n", "notN", "either")]
    for bound, exclusive in itertools.product(BOUNDS, (None, True, False)):
        for keyword in ("minimum", "maximum"):
            inner: dict[str, Any] = {"type": "integer", keyword: bound}
            if exclusive is not None:
                inner["exclusive" + keyword[0].upper() + keyword[1:]] = exclusive
            schema = {
                "type": "object",
                "properties": {
                    "n": inner,
                    "notN": {"not": inner},
                    "either": {"type": ["integer", "string"], "oneOf": [inner, {"type": "string"}]},
                },
            }
            _assert_same_verdicts(schema, bodies)


def test_answers_a_spent_setup_limit_as_the_full_stack_does(
    settings: Settings, redisdb: redis.Redis, make_token: TokenFactory
) -> None:
    """Past the setup limit both paths answer the same 429, with Retry-After, in the error shape."""
    limited = settings.with_changes(setup_rate_per_user=1)
    fast, full = create_app(limited), create_app(limited, fast_path=False)
    services_of(fast).directory.add("alice", [IDENTITY])
    headers = {"Authorization": f"Bearer {make_token('alice')}", "Content-Type": "application/json"}
    setup = json.dumps({"connectionType": "WebSocket", "identity": IDENTITY}).encode()
    assert answer(fast, "POST", SETUP, headers, setup)[0] == 200
    refused = [answer(app, "POST", SETUP, headers, setup) for app in (fast, full)]
    # Retry-After counts down between the two answers: compare it apart.
    waits = [dict(headers).pop("Retry-After") for _, headers, _ in refused]
    assert all(1 <= int(wait) <= 60 for wait in waits)
    unchanging = [(status, [h for h in kept if h[0] != "Retry-After"], body) for status, kept, body in refused]
    assert unchanging[0][0] == 429
    assert unchanging[0][:2] == unchanging[1][:2]
    messages = [re.sub(r"\d+", "N", body.pop("message")) for _, _, body in unchanging]
    assert messages[0] == messages[1]
    assert unchanging[0][2] == unchanging[1][2]


def _branch(*values: Any) -> dict[str, Any]:
    """Return an object schema that requires `kind` and lists its values."""
    return {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string", "enum": list(values)}}}


KIND = {"propertyName": "kind"}


@pytest.mark.parametrize(
    "schema",
    [
        {"oneOf": [_branch("a"), _branch("a", "b")], "discriminator": KIND},  # a in two branches
        {"oneOf": [_branch("a"), {**_branch("b"), "required": []}], "discriminator": KIND},
        {"oneOf": [_branch("a"), {**_branch("b"), "type": ["object", "null"]}], "discriminator": KIND},
        {"oneOf": [_branch("a"), _branch(1)], "discriminator": KIND},
        {"oneOf": [_branch("a"), _branch()], "discriminator": KIND},
        {"oneOf": [_branch("a"), _branch("b")], "discriminator": KIND, "type": "object"},
        {"oneOf": [_branch("a"), _branch("b")]},
        {"anyOf": [_branch("a"), _branch("b")], "discriminator": KIND},
        {
            "oneOf": [_branch("a"), {**_branch("b"), "properties": {"kind": {"enum": ["b"], "nullable": True}}}],
            "discriminator": KIND,
        },
    ],
)
def test_checks_every_branch_unless_the_discriminator_alone_decides(schema: dict[str, Any]) -> None:
    """A oneOf whose branches could overlap, or hold more than the discriminator, is checked whole."""
    assert discriminated_branches(schema) is None


def test_checks_one_branch_when_the_discriminator_decides() -> None:
    """Disjoint enums of strings on a property every object branch requires name each value's one branch."""
    first, second = _branch("a", "b"), _branch("c")
    schema = {"oneOf": [first, second], "discriminator": KIND, "description": "either"}
    assert discriminated_branches(schema) == ("kind", {"a": first, "b": first, "c": second})


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ({"not": {"type": "integer"}}, 1.0),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, 1.0),
        ({"type": "object", "properties": {"a": {"not": {"type": "integer"}}}}, {"a": 1.0}),
        ({"type": "integer", "minimum": 0, "exclusiveMinimum": True}, 1),  # Draft 7: a bound of True, so > 1
    ],
)
def test_a_later_drafts_schema_that_a_twin_could_read_laxer_stays_on_jsonschema(
    schema: dict[str, Any], instance: Any
) -> None:
    """A not, a oneOf or a Draft 4 bound anywhere keeps a Draft 7 schema off its twin, which would accept more."""
    validator = jsonschema.Draft7Validator(schema)
    twin_says = jsonschema_rs.Draft4Validator(schema).is_valid(instance)
    assert twin_says != validator.is_valid(instance)
    assert acceptance_check(schema, validator) == validator.is_valid


def test_a_later_drafts_schema_without_them_gets_a_twin_that_is_never_laxer() -> None:
    """Types, required and enums get the twin; 1.0 as an integer is refused by it and left to the validator."""
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 0}}}
    validator = jsonschema.Draft7Validator(schema)
    check = acceptance_check(schema, validator)
    assert isinstance(check, TwinCheck)
    assert [check({"n": n}) for n in (1, 1.0, -1)] == [True, False, False]
    assert [validator.is_valid({"n": n}) for n in (1, 1.0, -1)] == [True, True, False]
