"""Tests of the breaking-change guard (vora check-breaking) on real copies of the spec documents."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from vora.cli import main
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.server_api.rules import SERVER_SPEC_FILE
from vora.server_api.simulator import SIMULATOR_SPEC_FILE
from vora.tools.spec_guard import ACKNOWLEDGED_FILE, GUARDED_DOCUMENTS, RELEASED_DIR, GuardError, check_breaking

Edit = Callable[[dict[str, Any]], object]


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """Copy spec/ (documents, released baseline, acknowledgements) into a scratch directory."""
    target = tmp_path / "spec"
    shutil.copytree(DEFAULT_SPEC_DIR, target)
    return target


def edit_document(spec_dir: Path, document: str, edit: Edit) -> None:
    """Load a document, apply one edit and write it back."""
    path = spec_dir / document
    loaded = yaml.safe_load(path.read_text())
    edit(loaded)
    path.write_text(yaml.safe_dump(loaded, sort_keys=False))


def _add_query_parameter(document: dict[str, Any], required: bool) -> None:
    document["paths"]["/identity"]["get"]["parameters"] = [
        {"name": "region", "in": "query", "required": required, "schema": {"type": "string"}}
    ]


def test_the_spec_breaks_nothing_of_the_release() -> None:
    """Today's documents pass the guard against the released baseline."""
    report = check_breaking(DEFAULT_SPEC_DIR)
    assert not report.failed, [change.line() for change in report.breaking]
    assert report.unreleased == []


@pytest.mark.parametrize(
    ("document", "edit", "fragment"),
    [
        ("vora.yaml", lambda d: d["components"]["schemas"]["EventType"]["enum"].pop(), "/enum/14"),
        ("vora.yaml", lambda d: d["paths"].pop("/health/liveness"), "/paths/~1health~1liveness/get"),
        ("vora.yaml", lambda d: d["paths"]["/logout/{identity}"]["post"]["responses"].pop("404"), "/responses/404"),
        ("vora.yaml", lambda d: d["components"]["schemas"]["EventsIn"]["required"].append("events"), "/required/1"),
        ("vora.yaml", lambda d: d["components"]["schemas"]["SetupIn"]["required"].append("holdUpMode"), "/required/2"),
        ("vora.yaml", lambda d: _add_query_parameter(d, required=True), "/paths/~1identity/get/parameters/0"),
        (
            "vora.yaml",
            lambda d: d["components"]["schemas"]["EventsIn"]["properties"]["subscribeAll"].update(type="string"),
            "/subscribeAll/type",
        ),
        (
            "vora.yaml",
            lambda d: d["paths"]["/identity/setup"]["post"].update(operationId="setupSession"),
            "/paths/~1identity~1setup/post/operationId",
        ),
        (SERVER_SPEC_FILE, lambda d: d["components"]["schemas"]["DisconnectReason"]["enum"].pop(), "/enum/"),
        ("vora-webhooks.yaml", lambda d: d["webhooks"].pop("pushNotification"), "/webhooks/pushNotification"),
        (
            "vora-events.asyncapi.yaml",
            lambda d: d["channels"]["/vora/ws"]["subscribe"]["message"]["oneOf"].pop(-2),  # resumeGap: a released one
            "/channels/~1vora~1ws/subscribe/message/oneOf/",
        ),
        (
            "vora-events.asyncapi.yaml",
            lambda d: d["channels"]["/vora/ws"]["subscribe"].update(operationId="onEvent"),
            "/channels/~1vora~1ws/subscribe/operationId",
        ),
    ],
)
def test_a_breaking_change_is_caught(spec_dir: Path, document: str, edit: Edit, fragment: str) -> None:
    """Removing an operation, response, message or enum value, requiring a field, a new type or operationId fails."""
    edit_document(spec_dir, document, edit)
    report = check_breaking(spec_dir)
    assert report.failed
    assert any(change.document == document and fragment in change.path for change in report.breaking), [
        change.line() for change in report.breaking
    ]


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["components"]["schemas"]["EventType"]["enum"].append("callParked"),
        lambda d: _add_query_parameter(d, required=False),
        lambda d: d["info"].update(description="Reworded."),
        lambda d: d["components"]["responses"]["UnsupportedMediaType"].update(description="Reworded."),
    ],
)
def test_a_compatible_change_passes(spec_dir: Path, edit: Edit) -> None:
    """A widened enum, an optional parameter or new wording (a response's description too) is no breaking change."""
    edit_document(spec_dir, "vora.yaml", edit)
    assert not check_breaking(spec_dir).failed


def test_a_property_named_like_prose_is_guarded(spec_dir: Path) -> None:
    """Removing an answer's required property named description breaks clients: the name is a field, not prose."""

    def with_property(document: dict[str, Any]) -> None:
        document["components"]["schemas"]["SetupOut"]["properties"]["description"] = {"type": "string"}
        document["components"]["schemas"]["SetupOut"]["required"].append("description")

    edit_document(spec_dir / RELEASED_DIR, "vora.yaml", with_property)
    report = check_breaking(spec_dir)
    assert any("/properties/description" in change.path for change in report.breaking), [
        change.line() for change in report.breaking
    ]


def test_reworded_asyncapi_prose_passes(spec_dir: Path) -> None:
    """A message's summary or a schema's description reworded in the AsyncAPI document breaks no client."""

    def reword(document: dict[str, Any]) -> None:
        document["components"]["messages"]["resumeGap"]["summary"] = "Reworded."
        document["components"]["schemas"]["ResumeGapData"]["description"] = "Reworded."

    edit_document(spec_dir, "vora-events.asyncapi.yaml", reword)
    assert not check_breaking(spec_dir).failed


def test_an_acknowledged_break_passes_and_is_listed(spec_dir: Path) -> None:
    """A break named in breaking-changes.yaml with a reason passes, and is still listed as acknowledged."""
    edit_document(spec_dir, "vora.yaml", lambda d: d["paths"].pop("/health/liveness"))
    entry = {"document": "vora.yaml", "path": "/paths/~1health~1liveness/get", "reason": "Liveness moves to /livez."}
    known = yaml.safe_load((spec_dir / ACKNOWLEDGED_FILE).read_text())["acknowledged"]
    (spec_dir / ACKNOWLEDGED_FILE).write_text(yaml.safe_dump({"acknowledged": [*known, entry]}))
    report = check_breaking(spec_dir)
    assert not report.failed
    assert [change.path for change in report.acknowledged if change.document == "vora.yaml"] == [entry["path"]]


def test_an_acknowledgement_without_reason_is_refused(spec_dir: Path) -> None:
    """An entry that does not say why is an error, not a silent pass."""
    (spec_dir / ACKNOWLEDGED_FILE).write_text(
        yaml.safe_dump({"acknowledged": [{"document": "vora.yaml", "path": "/x"}]})
    )
    with pytest.raises(GuardError, match="reason"):
        check_breaking(spec_dir)


def test_an_acknowledgement_file_that_is_not_yaml_is_named_with_its_line(spec_dir: Path) -> None:
    """A reason with an unquoted colon is reported as a GuardError naming the file and line, not a traceback."""
    (spec_dir / ACKNOWLEDGED_FILE).write_text(
        "acknowledged:\n  - document: vora.yaml\n    path: /x\n    reason: ids: refused before\n"
    )
    with pytest.raises(GuardError, match=r"breaking-changes.yaml: not YAML: .*line 4"):
        check_breaking(spec_dir)


def test_the_last_release_tag_is_the_baseline(tmp_path: Path) -> None:
    """With a tag, the guard compares with the documents at the tag, not with spec/released/."""
    repo = tmp_path / "repo"
    spec_dir = repo / "spec"
    shutil.copytree(DEFAULT_SPEC_DIR, spec_dir)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "release"], check=True)
    subprocess.run([*git, "tag", "v0.2.0"], check=True)
    shutil.rmtree(spec_dir / RELEASED_DIR)
    edit_document(spec_dir, "vora.yaml", lambda d: d["paths"].pop("/health/readiness"))
    report = check_breaking(spec_dir, repo_root=repo)
    assert report.baseline == "tag v0.2.0"
    assert [change.path for change in report.breaking] == ["/paths/~1health~1readiness/get"]
    assert report.unreleased == []


def test_cli_lists_each_break_and_fails(spec_dir: Path) -> None:
    """`vora check-breaking` prints one BREAK line a change, names the file to acknowledge in, and exits 1."""
    edit_document(spec_dir, "vora.yaml", lambda d: d["components"]["schemas"]["EventType"]["enum"].pop())
    result = CliRunner().invoke(main, ["check-breaking"], env={"VORA_SPEC_DIR": str(spec_dir)})
    assert result.exit_code == 1, result.output
    assert "BREAK vora.yaml: breaking remove /components/schemas/EventType/enum/14" in result.output
    assert ACKNOWLEDGED_FILE in result.output


def test_every_document_is_guarded() -> None:
    """The guard covers both APIs, the webhooks and the AsyncAPI document; not the console's, served with its client."""
    documents = {p.name for p in DEFAULT_SPEC_DIR.glob("vora*.yaml")} - {SIMULATOR_SPEC_FILE}
    assert sorted(GUARDED_DOCUMENTS) == sorted(documents)


def test_a_tag_inserted_into_the_tag_list_passes(spec_dir: Path) -> None:
    """A new tag described before the others breaks no client, though the later ones move down the list."""
    edit_document(spec_dir, "vora.yaml", lambda d: d["tags"].insert(0, {"name": "Notes", "description": "Notes"}))
    report = check_breaking(spec_dir)
    assert not report.failed, [change.line() for change in report.breaking]


def test_an_event_type_inserted_into_an_asyncapi_enum_is_an_addition(spec_dir: Path) -> None:
    """A value inserted mid-enum in the AsyncAPI document is one addition, not every later value replaced."""

    def insert(document: dict[str, Any]) -> None:
        document["components"]["schemas"]["CallEvent"]["allOf"][1]["properties"]["type"]["enum"].insert(4, "callParked")

    edit_document(spec_dir, "vora-events.asyncapi.yaml", insert)
    report = check_breaking(spec_dir)
    assert [change.line() for change in report.breaking] == []


def test_a_spec_document_that_is_not_yaml_is_named_with_its_line(spec_dir: Path) -> None:
    """A document with a YAML error is one short GuardError with its line, not api-smart-diff's copy of the document."""
    path = spec_dir / "vora.yaml"
    path.write_text(path.read_text().replace("      operationId: logout\n", "      operationId: [logout\n", 1))
    with pytest.raises(GuardError, match=r"vora.yaml: not YAML: .*line 4\d") as refused:
        check_breaking(spec_dir)
    assert len(str(refused.value)) < 400


def test_cli_prints_the_entries_that_acknowledge_its_breaks(spec_dir: Path) -> None:
    """The entries `vora check-breaking` prints, pasted under acknowledged: with a reason each, make it pass."""
    edit_document(spec_dir, "vora.yaml", lambda d: d["components"]["schemas"]["Identity"].update(pattern="^[0-9]+$"))
    env = {"VORA_SPEC_DIR": str(spec_dir)}
    failed = CliRunner().invoke(main, ["check-breaking"], env=env)
    assert failed.exit_code == 1, failed.output
    printed = failed.output.split("each with the reason clients can live with it:\n", 1)[1]
    entries = yaml.safe_load(printed)
    assert len(entries) == failed.output.count("BREAK ") > 1
    path = spec_dir / ACKNOWLEDGED_FILE
    path.write_text(path.read_text() + printed.replace("reason: ''", "reason: identities are digits from v0.3"))
    passed = CliRunner().invoke(main, ["check-breaking"], env=env)
    assert passed.exit_code == 0, passed.output


def test_a_key_given_twice_is_named_with_its_line(spec_dir: Path) -> None:
    """A duplicate key, which js-yaml refuses, is one short GuardError with file and line, not the whole document."""
    path = spec_dir / "vora.yaml"
    path.write_text(path.read_text().replace("      operationId: logout\n", "      operationId: logout\n" * 2, 1))
    with pytest.raises(GuardError) as refused:
        check_breaking(spec_dir)
    assert str(refused.value) == f"vora.yaml: api-smart-diff failed: {path}:40:7: not YAML: duplicated mapping key"
