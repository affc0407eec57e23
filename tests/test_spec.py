"""Tests of spec/vora.yaml: valid, faithful to the seeds, and in step with the code."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from vora.core.catalog import SUBSCRIBABLE_EVENTS
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import ASYNCAPI_FILE
from vora.server_api.rules import SERVER_SPEC_FILE
from vora.server_api.simulator import SIMULATOR_SPEC_FILE
from vora.tools.spec_check import check_all, check_console_openapi, check_event_id_patterns, check_server_openapi

SPEC_PATH = DEFAULT_SPEC_DIR / "vora.yaml"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """Load the OpenAPI document."""
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return loaded


def test_validates_with_openapi_spec_validator() -> None:
    """The document is valid OpenAPI 3.0."""
    document, _ = read_from_filename(str(SPEC_PATH))
    validate(document)


def test_header_matches_the_seed(spec: dict[str, Any]) -> None:
    """Title, version, servers in the seed's order and tags are the seed's."""
    assert spec["openapi"] == "3.0.3"
    assert spec["info"]["title"] == "VORA Rest API"
    assert spec["info"]["version"] == "0.2"
    # The seed's seven servers, in order, described by shape: the private addresses are
    # documentation and must not appear as literals outside spec/ (nothing may target them).
    urls = [s["url"] for s in spec["servers"]]
    private = r"172\.24\.46\.6[01]"
    shapes = [
        r"https://localhost:18443/vora",
        rf"https://{private}:8443/vora",
        rf"https://{private}:8443/vora",
        r"http://localhost:18085/vora",
        rf"http://{private}:8085/vora",
        rf"http://{private}:8085/vora",
        r"https://localhost:8443/vora",
    ]
    assert len(urls) == len(shapes)
    assert all(re.fullmatch(shape, url) for shape, url in zip(shapes, urls, strict=True)), urls
    assert len(set(urls)) == 7
    assert [t["name"] for t in spec["tags"]] == ["Session", "Health"]


def test_operations_and_security_match_the_seed(spec: dict[str, Any]) -> None:
    """The seven operationIds sit on the seed's paths; secured ones need scope.vora.identities."""
    found = {
        (path, method): op for path, item in spec["paths"].items() for method, op in item.items() if "operationId" in op
    }
    assert {k: v["operationId"] for k, v in found.items()} == {
        ("/logout/{identity}", "post"): "logout",
        ("/identity/{identity}/eventSubscription", "post"): "events",
        ("/identity/setup", "post"): "setup",
        ("/identity", "get"): "identities",
        ("/identity", "options"): "identitiesOptions",
        ("/health/readiness", "get"): "readiness",
        ("/health/liveness", "get"): "liveness",
    }
    for key in [("/logout/{identity}", "post"), ("/identity/setup", "post"), ("/identity", "get")]:
        assert found[key]["security"] == [{"security_auth": ["scope.vora.identities"]}]
        assert {"200", "400", "401", "403", "404", "409", "500"} <= set(found[key]["responses"])
    for key in [("/identity", "options"), ("/health/readiness", "get"), ("/health/liveness", "get")]:
        assert found[key]["security"] == []


def test_oauth_scheme_matches_the_seed(spec: dict[str, Any]) -> None:
    """The security_auth scheme is the seed's authorizationCode flow with four scopes."""
    flow = spec["components"]["securitySchemes"]["security_auth"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"].endswith("/authorization/oauth2/authorize")
    assert flow["tokenUrl"].endswith("/authorization/oauth2/token")
    assert set(flow["scopes"]) == {
        "scope.vora.identities",
        "scope.vora.calls",
        "scope.vora.presence",
        "scope.vora.recording",
    }


def test_schemas_keep_the_seeds_required_flags(spec: dict[str, Any]) -> None:
    """The five schemas keep the seed's required fields (IdentityOut.identities as in the full render)."""
    schemas = spec["components"]["schemas"]
    assert schemas["ResponseStatusVoraError"]["required"] == ["timestamp", "status", "error", "message"]
    assert schemas["EventsIn"]["required"] == ["subscribeAll"]
    assert schemas["SetupIn"]["required"] == ["connectionType", "identity"]
    assert schemas["SetupOut"]["required"] == ["webSocketToken"]
    assert schemas["IdentityOut"]["required"] == ["identities"]


def test_event_enum_is_the_code_catalogue(spec: dict[str, Any]) -> None:
    """The EventType enum lists exactly the catalogue's subscribable events, in order."""
    assert spec["components"]["schemas"]["EventType"]["enum"] == list(SUBSCRIBABLE_EVENTS)
    assert {"callRinging", "callHeld", "presence"} <= set(SUBSCRIBABLE_EVENTS)


def test_check_spec_finds_no_problem() -> None:
    """`vora check-spec` reports nothing on the committed documents."""
    assert check_all(DEFAULT_SPEC_DIR) == []


def test_deviations_are_documented() -> None:
    """docs/spec-deviations.md exists and names each deviation area."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "spec-deviations.md").read_text()
    for topic in ["IdentityOut", "*/*", "204", "413", "415", "503", "pattern", "additionalProperties", "enum"]:
        assert topic in text, topic


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda s: s["EventType"]["enum"].pop(), "EventType enum"),
        (lambda s: s["Identity"].update(pattern="^.*$"), "Identity pattern"),
        (lambda s: s["PresenceData"]["properties"]["status"]["enum"].append("asleep"), "schema PresenceData differs"),
        (lambda s: s["DisconnectReason"]["enum"].append("kicked"), "not channelTerminated reasons"),
        (lambda s: s["CallEvent"]["properties"]["type"]["enum"].pop(), "CallEvent types"),
        (lambda s: s["PublishRequest"]["discriminator"]["mapping"].pop("presence"), "discriminator maps"),
    ],
)
def test_check_spec_holds_the_server_api_equal_to_the_catalogue(
    tmp_path: Path, edit: Callable[[dict[str, Any]], object], fragment: str
) -> None:
    """A server API document whose enums, patterns or payload schemas drift from the others is reported."""
    for document in DEFAULT_SPEC_DIR.glob("*.yaml"):
        shutil.copy(document, tmp_path / document.name)
    server = yaml.safe_load((tmp_path / SERVER_SPEC_FILE).read_text())
    edit(server["components"]["schemas"])
    (tmp_path / SERVER_SPEC_FILE).write_text(yaml.safe_dump(server, sort_keys=False))
    problems = check_server_openapi(tmp_path)
    assert any(fragment in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda s: s["EventType"]["enum"].pop(), "EventType enum"),
        (lambda s: s["Session"]["properties"]["sockets"].update(minimum=1), "schema Session differs"),
        (lambda s: s["Subscription"]["required"].pop(), "schema Subscription differs"),
        (lambda s: s["PresenceData"]["properties"]["status"]["enum"].pop(), "schema PresenceData differs"),
        (lambda s: s["RecordingEvent"]["properties"]["type"]["enum"].pop(), "RecordingEvent types"),
        (lambda s: s["SimulatedEvent"]["discriminator"]["mapping"].pop("presence"), "SimulatedEvent discriminator"),
    ],
)
def test_check_spec_holds_the_console_simulator_equal_to_the_server_api(
    tmp_path: Path, edit: Callable[[dict[str, Any]], object], fragment: str
) -> None:
    """A console document whose event types or session schemas drift from the server API's is reported."""
    for document in DEFAULT_SPEC_DIR.glob("*.yaml"):
        shutil.copy(document, tmp_path / document.name)
    console = yaml.safe_load((tmp_path / SIMULATOR_SPEC_FILE).read_text())
    edit(console["components"]["schemas"])
    (tmp_path / SIMULATOR_SPEC_FILE).write_text(yaml.safe_dump(console, sort_keys=False))
    problems = check_console_openapi(tmp_path)
    assert any(fragment in problem for problem in problems), problems


def test_check_spec_holds_the_console_document_to_the_simulator_path(tmp_path: Path) -> None:
    """A console document served under another base path than the one vora.app routes to it is reported."""
    for document in DEFAULT_SPEC_DIR.glob("*.yaml"):
        shutil.copy(document, tmp_path / document.name)
    console = yaml.safe_load((tmp_path / SIMULATOR_SPEC_FILE).read_text())
    console["servers"] = [{"url": "http://localhost:18085/vora/devtools"}]
    (tmp_path / SIMULATOR_SPEC_FILE).write_text(yaml.safe_dump(console, sort_keys=False))
    problems = check_console_openapi(tmp_path)
    assert any("only path vora.app routes to it" in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "at", "expected"),
    [
        (
            '$ref: "#/components/schemas/EventsIn"',
            '$ref: "#/components/schemas/EventIn"',
            "EventIn",
            "/requestBody/content/application~1json/schema/$ref: $ref '#/components/schemas/EventIn' names nothing"
            " in this document; did you mean 'EventsIn'?",
        ),
        (
            '$ref: "#/components/responses/Unauthorized"',
            '$ref: "#/components/responses/Unauthorised"',
            "Unauthorised",
            "/responses/401/$ref: $ref '#/components/responses/Unauthorised' names nothing in this document;"
            " did you mean 'Unauthorized'?",
        ),
        (
            "      operationId: events\n",
            "      operationId: subscribeEvents\n",
            "              operationId: events\n",
            "/links/eventSubscription/operationId: the link names operationId 'events', which no operation has",
        ),
    ],
)
def test_check_spec_names_the_file_line_and_place_of_a_dangling_reference(
    tmp_path: Path, old: str, new: str, at: str, expected: str
) -> None:
    """A $ref or a link naming nothing is reported with its file, line and JSON Pointer, and the closest name."""
    for document in DEFAULT_SPEC_DIR.glob("*.yaml"):
        shutil.copy(document, tmp_path / document.name)
    text = SPEC_PATH.read_text().replace(old, new, 1)
    line = text[: text.index(at)].count("\n") + 1
    (tmp_path / "vora.yaml").write_text(text)
    problems = check_all(tmp_path)
    assert any(p.startswith(f"{tmp_path / 'vora.yaml'}:{line}: ") and p.endswith(expected) for p in problems), problems
    assert all(len(problem) < 400 for problem in problems), problems


def test_check_spec_names_the_place_of_a_dangling_reference_in_the_event_contract(tmp_path: Path) -> None:
    """A $ref of the AsyncAPI document that names nothing is reported with its file, line and JSON Pointer."""
    for document in DEFAULT_SPEC_DIR.glob("*.yaml"):
        shutil.copy(document, tmp_path / document.name)
    old, new = '$ref: "#/components/schemas/PresenceData"', '$ref: "#/components/schemas/PresenseData"'
    text = (DEFAULT_SPEC_DIR / ASYNCAPI_FILE).read_text().replace(old, new, 1)
    line = text[: text.index(new)].count("\n") + 1
    (tmp_path / ASYNCAPI_FILE).write_text(text)
    assert (
        f"{tmp_path / ASYNCAPI_FILE}:{line}: /components/schemas/PresenceEvent/allOf/1/properties/data/$ref:"
        " $ref '#/components/schemas/PresenseData' names nothing in this document; did you mean 'PresenceData'?"
        in check_all(tmp_path)
    )


def test_check_spec_says_where_the_validator_refused_without_repeating_the_document(tmp_path: Path) -> None:
    """A document the OpenAPI validator refuses is reported at the place it refused, in a line, not the document."""
    for document in DEFAULT_SPEC_DIR.glob("*.yaml"):
        shutil.copy(document, tmp_path / document.name)
    text = SPEC_PATH.read_text()
    old = '      responses:\n        "200":\n          description: Successful operation\n'
    line = text[: text.index(old)].count("\n") + 2
    (tmp_path / "vora.yaml").write_text(text.replace(old, old.replace('"200"', "two-hundred"), 1))
    problems = check_all(tmp_path)
    assert [p for p in problems if "vora.yaml:" in p] == [
        f"{tmp_path / 'vora.yaml'}:{line}: /paths/~1logout~1{{identity}}/post/responses:"
        r" 'two-hundred' does not match any of the regexes: '^[1-5](?:\\d{2}|XX)$', '^x-'"
    ]


@pytest.mark.parametrize(
    ("document", "loose"),
    [
        (SERVER_SPEC_FILE, '"^[0-9]{1,20}-[0-9]{1,20}$"'),
        (ASYNCAPI_FILE, '"^[0-9]+-[0-9]+$"'),
        ("vora.yaml", "^\\d+-\\d+$"),
    ],
)
def test_check_spec_names_an_event_id_pattern_looser_than_vora_reads(tmp_path: Path, document: str, loose: str) -> None:
    """An eventId pattern other than EVENT_ID_SCHEMA_PATTERN is reported with its file and line; today's pass."""
    for source in DEFAULT_SPEC_DIR.glob("*.yaml"):
        shutil.copy(source, tmp_path / source.name)
    assert check_event_id_patterns(tmp_path) == []
    text = (tmp_path / document).read_text()
    first = text.index("pattern: '^(?:[0-9]{1,19}")
    line_end = text.index("\n", first)
    (tmp_path / document).write_text(text[:first] + f"pattern: {loose}" + text[line_end:])
    line = text[:first].count("\n") + 1
    problems = check_event_id_patterns(tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{tmp_path / document}:{line}: /")
    assert "each part at most 2^64-1" in problems[0]
