"""Tests of spec/vora-events.asyncapi.yaml: valid AsyncAPI 2.6, and in step with the code."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from flask import Flask

from vora.core.catalog import LIFECYCLE_EVENTS, SUBSCRIBABLE_EVENTS
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import ASYNCAPI_FILE, EventCatalog, InvalidEvent, data_schema_name, inline_refs
from vora.http.fast_path import TwinCheck
from vora.tools.spec_check import DEFAULT_ASYNCAPI_SCHEMA, EVENT_CHANNELS, asyncapi_events, check_asyncapi


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """Load the AsyncAPI document."""
    loaded: dict[str, Any] = yaml.safe_load((DEFAULT_SPEC_DIR / ASYNCAPI_FILE).read_text())
    return loaded


@pytest.fixture(scope="module")
def official_validator() -> jsonschema.Draft7Validator:
    """Build a validator from the official AsyncAPI 2.6.0 JSON Schema that `make install` fetches."""
    assert DEFAULT_ASYNCAPI_SCHEMA.is_file(), "run `make install` to fetch @asyncapi/specs"
    return jsonschema.Draft7Validator(json.loads(DEFAULT_ASYNCAPI_SCHEMA.read_text()))


def test_validates_against_the_official_schema(
    document: dict[str, Any], official_validator: jsonschema.Draft7Validator
) -> None:
    """The document is valid AsyncAPI 2.6.0."""
    assert [e.message for e in official_validator.iter_errors(document)] == []


def test_official_schema_catches_a_broken_document(
    document: dict[str, Any], official_validator: jsonschema.Draft7Validator
) -> None:
    """The same check fails on a document with a malformed channel, so it is not vacuous."""
    broken = copy.deepcopy(document)
    broken["channels"]["/vora/ws"]["subscribe"]["message"] = 5
    broken["info"].pop("version")
    assert len(list(official_validator.iter_errors(broken))) >= 2


def test_messages_are_the_catalogue(document: dict[str, Any]) -> None:
    """The channel sends exactly the catalogue's events, subscribable then lifecycle, in order."""
    assert asyncapi_events(document) == [*SUBSCRIBABLE_EVENTS, *LIFECYCLE_EVENTS]
    assert {"callRinging", "callHeld", "presence"} <= set(asyncapi_events(document))
    assert check_asyncapi(DEFAULT_SPEC_DIR) == []


def test_every_event_type_has_a_data_schema(document: dict[str, Any]) -> None:
    """Each event type's data schema exists in the document."""
    schemas = document["components"]["schemas"]
    for event_type in (*SUBSCRIBABLE_EVENTS, *LIFECYCLE_EVENTS):
        assert data_schema_name(event_type) in schemas


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("callRinging", {"callId": "c"}),
        ("callTransferred", {"callId": "c", "transferTarget": "+3460", "direction": "inbound"}),
        ("presence", {"status": "doNotDisturb", "note": "in a meeting"}),
        ("recordingStopped", {"callId": "c", "recordingId": "r", "durationSeconds": 12}),
    ],
)
def test_minimal_payloads_are_accepted(event_type: str, data: dict[str, Any]) -> None:
    """A call needs only callId, presence only status, a recording callId and recordingId."""
    EventCatalog(DEFAULT_SPEC_DIR).check(event_type, data)


@pytest.mark.parametrize(
    ("event_type", "data", "fragment"),
    [
        ("callRinging", {"callId": ""}, "callId"),
        ("callRinging", {"callId": "c", "direction": "sideways"}, "direction"),
        ("callEnded", {"callId": "c", "durationSeconds": -1}, "durationSeconds"),
        ("presence", {"status": "busy", "mood": "good"}, "mood"),
        ("recordingFailed", {"recordingId": "r"}, "callId"),
        ("callRinging", [], "object"),
    ],
)
def test_payloads_breaking_their_schema_are_refused(event_type: str, data: Any, fragment: str) -> None:
    """Data that breaks its schema is refused with a message naming the problem."""
    with pytest.raises(InvalidEvent, match=fragment):
        EventCatalog(DEFAULT_SPEC_DIR).check(event_type, data)


def test_both_transports_are_described_and_served(document: dict[str, Any], app: Flask) -> None:
    """The document describes /vora/ws and /vora/sse with the same messages, and the app serves both paths."""
    assert asyncapi_events(document, "/vora/sse") == asyncapi_events(document, "/vora/ws")
    served = {rule.rule for rule in app.url_map.iter_rules()}
    assert set(EVENT_CHANNELS) <= served


def test_check_spec_fails_when_a_transport_is_missing(document: dict[str, Any], tmp_path: Path) -> None:
    """A document without the /vora/sse channel fails `vora check-spec`."""
    for source in DEFAULT_SPEC_DIR.iterdir():
        if source.is_file():  # spec/released/ holds the last release's copies, not served documents
            (tmp_path / source.name).write_bytes(source.read_bytes())
    broken = copy.deepcopy(document)
    del broken["channels"]["/vora/sse"]
    (tmp_path / ASYNCAPI_FILE).write_text(yaml.safe_dump(broken))
    problems = check_asyncapi(tmp_path)
    assert any("/vora/sse" in problem for problem in problems), problems


# Values on both sides of every rule the payload schemas use, and of the types jsonschema_rs reads otherwise.
TRICKY_VALUES: list[Any] = [
    "c", "", "x" * 128, "x" * 129, "\u00e9" * 128, "\U0001f4de" * 129, "\ud800", "inbound", "busy", "interval",
    0, 1, -1, 12, 1.0, -1.0, 0.5, True, False, None, 2**64, -(2**63) - 1, [], {}, ["c"], {"callId": "c"},
]  # fmt: skip


def _payloads(schema: dict[str, Any]) -> list[Any]:
    """Return payloads that set each property of a data schema to each tricky value, break required, add a key."""
    properties = schema["properties"]
    minimal = dict.fromkeys(schema["required"], "c")
    payloads: list[Any] = [minimal, {}, [], "c", None, {**minimal, "unknown": "c"}]
    for name, value in itertools.product(properties, TRICKY_VALUES):
        payloads.append({**minimal, name: value})
        payloads.append({name: value})
    for name, prop in properties.items():
        payloads += [{**minimal, name: value} for value in prop.get("enum", [])]
    return payloads


@pytest.mark.parametrize("event_type", list(SUBSCRIBABLE_EVENTS))
def test_the_catalogue_gives_jsonschemas_verdict_from_its_faster_check(
    document: dict[str, Any], event_type: str
) -> None:
    """Each publishable type is checked by jsonschema_rs first; every payload gets the Draft 7 validator's verdict."""
    schemas = document["components"]["schemas"]
    schema = inline_refs(schemas[data_schema_name(event_type)], schemas)
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    catalog = EventCatalog(DEFAULT_SPEC_DIR)
    assert isinstance(catalog.first_checks[event_type], TwinCheck)
    payloads = _payloads(schema)
    verdicts = [validator.is_valid(payload) for payload in payloads]
    assert 0 < sum(verdicts) < len(payloads)
    disagreed = []
    for payload, verdict in zip(payloads, verdicts, strict=True):
        try:
            catalog.check(event_type, payload)
            accepted = True
        except InvalidEvent:
            accepted = False
        if accepted != verdict:
            disagreed.append((payload, verdict))
    assert disagreed == []


def test_a_payload_the_faster_check_refuses_is_decided_by_jsonschema() -> None:
    """A duration of 1.0 is no Draft 4 integer to jsonschema_rs but a Draft 7 one: the catalogue accepts it."""
    catalog = EventCatalog(DEFAULT_SPEC_DIR)
    payload = {"callId": "c", "recordingId": "r", "durationSeconds": 1.0}
    assert not catalog.first_checks["recordingStopped"](payload)
    catalog.check("recordingStopped", payload)
