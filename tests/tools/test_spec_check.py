"""Tests of how `vora check-spec` reports the mistakes API owners make, each with file, line and a fix."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from vora.cli import main
from vora.core.settings import DEFAULT_SPEC_DIR

Edit = Callable[[str], str]
LOGOUT_ID = "      operationId: logout\n"


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """Copy spec/ into a scratch directory."""
    target = tmp_path / "spec"
    shutil.copytree(DEFAULT_SPEC_DIR, target)
    return target


def check_spec(spec_dir: Path, document: str, edit: Edit) -> list[str]:
    """Edit one document's text, run `vora check-spec` on the copy, and return its FAIL lines (it must fail)."""
    path = spec_dir / document
    edited = edit(path.read_text())
    assert edited != path.read_text(), "the edit changed nothing"
    path.write_text(edited)
    result = CliRunner().invoke(main, ["check-spec"], env={"VORA_SPEC_DIR": str(spec_dir)})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return [line.removeprefix("FAIL ") for line in result.output.splitlines() if line.startswith("FAIL ")]


def test_a_yaml_syntax_error_is_named_with_line_and_column(spec_dir: Path) -> None:
    """An unclosed bracket is reported with file, line, column and where the unfinished part began, not a traceback."""
    failed = check_spec(spec_dir, "vora.yaml", lambda t: t.replace(LOGOUT_ID, LOGOUT_ID + "      summary: [oops\n", 1))
    assert failed == [
        f"{spec_dir / 'vora.yaml'}:41:17: not YAML: while parsing a flow sequence expected ',' or ']', but got ':' "
        "(what is unfinished began on line 40); fix the YAML there (a bracket, quote or indentation)"
    ]


def test_a_tab_is_named_with_its_line_and_the_fix(spec_dir: Path) -> None:
    """A tab in the indentation is reported at its line with the advice to indent with spaces."""
    failed = check_spec(spec_dir, "vora.yaml", lambda t: t.replace(LOGOUT_ID, "\toperationId: logout\n", 1))
    assert len(failed) == 1
    assert failed[0].startswith(f"{spec_dir / 'vora.yaml'}:39:1: not YAML: ")
    assert failed[0].endswith("YAML indents with spaces only: replace the tab with spaces")


def test_a_duplicate_key_is_named_with_both_lines(spec_dir: Path) -> None:
    """A key given twice, which YAML readers silently resolve to the last, is reported with both lines."""
    twice = "      operationId: online\n" * 2
    failed = check_spec(spec_dir, "vora-server.yaml", lambda t: t.replace("      operationId: online\n", twice))
    assert len(failed) == 1
    assert failed[0].startswith(f"{spec_dir / 'vora-server.yaml'}:247: /paths/~1identities~1{{identity}}~1online/get/")
    assert "duplicate key 'operationId' (first on line 246)" in failed[0]


@pytest.mark.parametrize(
    ("removed", "said"),
    [
        ("      operationId: logout\n", "POST /logout/{identity} has no operationId"),
        ("      tags:\n        - Session\n      summary: User Log Out\n", "POST /logout/{identity} has no tags"),
    ],
)
def test_an_operation_without_operation_id_or_tag_is_named(spec_dir: Path, removed: str, said: str) -> None:
    """An operation lacking what names its handler is reported at its line, not as a KeyError."""
    kept = "      summary: User Log Out\n" if "tags" in removed else ""
    failed = check_spec(spec_dir, "vora.yaml", lambda t: t.replace(removed, kept, 1))
    assert f"{spec_dir / 'vora.yaml'}:35: {said}" in "\n".join(failed)


def test_an_undeclared_path_parameter_is_named_at_its_operation(spec_dir: Path) -> None:
    """A path template variable no parameter declares is reported at its operation's line, with how to declare it."""
    deeper = "  /logout/{identity}/{device}:\n"
    failed = check_spec(spec_dir, "vora.yaml", lambda t: t.replace("  /logout/{identity}:\n", deeper))
    assert failed == [
        f"{spec_dir / 'vora.yaml'}:35: /paths/~1logout~1{{identity}}~1{{device}}/post: Path parameter 'device' for "
        "'post' operation in '/logout/{identity}/{device}' was not resolved; declare it in the operation's (or the "
        "path's) parameters with `in: path` and `required: true`"
    ]


def test_an_error_response_without_the_error_shape_is_named(spec_dir: Path) -> None:
    """A 4xx response with a schema of its own is reported at its line, with the two ways to give it the error shape."""
    own = (
        '        "400":\n          description: Bad\n          content:\n            application/json:\n'
        "              schema:\n                type: object\n"
    )
    failed = check_spec(
        spec_dir,
        "vora.yaml",
        lambda t: t.replace('        "400":\n          $ref: "#/components/responses/BadRequest"\n', own, 1),
    )
    assert failed == [
        f"{spec_dir / 'vora.yaml'}:46: /paths/~1logout~1{{identity}}/post/responses/400: the error response has "
        "another schema; every error answers in the error shape: $ref one of #/components/responses (BadRequest, "
        "NotFound...), or give it application/json with schema $ref '#/components/schemas/ResponseStatusVoraError'"
    ]


def test_an_error_response_without_content_is_named(spec_dir: Path) -> None:
    """A 5xx response with a description only is reported: clients would get an error body the document hides."""
    failed = check_spec(
        spec_dir,
        "vora-server.yaml",
        lambda t: t.replace(
            '        "503":\n          $ref: "#/components/responses/StoreUnavailable"\n  /users/',
            '        "503":\n          description: Down\n  /users/',
            1,
        ),
    )
    assert len(failed) == 1
    assert "/paths/~1identities~1{identity}~1online/get/responses/503: the error response has no content" in failed[0]


def test_a_new_event_type_in_one_document_says_what_differs_and_where_to_add_it(spec_dir: Path) -> None:
    """An event type the catalogue lacks is named alone, at its list's line, with where event types are added."""
    failed = check_spec(
        spec_dir,
        "vora.yaml",
        lambda t: t.replace("        - callHeld\n", "        - callHeld\n        - callParked\n", 1),
    )
    assert failed == [
        f"{spec_dir / 'vora.yaml'}:372: /components/schemas/EventType/enum: EventType enum lists ['callParked'], which "
        "vora.core.catalog does not; an event type is added in vora/core/catalog.py (SUBSCRIBABLE_EVENTS) and in "
        "every list that docs/api-owners.md ('Adding an event type') names, in the same order"
    ]


def test_a_renamed_operation_id_names_the_handler_to_rename(spec_dir: Path) -> None:
    """An operationId renamed in the spec alone points at the handler still named the old way, and the links."""
    failed = check_spec(spec_dir, "vora.yaml", lambda t: t.replace(LOGOUT_ID, "      operationId: logOut\n", 1))
    assert (
        "vora.yaml: POST /logout/{identity} (logOut) has no handler vora.rest.handlers.session.logOut; "
        "`vora scaffold logOut` writes one; or, if 'logout' was renamed, rename its handler "
        "vora.rest.handlers.session.SessionHandlers.logout to logOut (and every link naming it)"
    ) in failed
    assert sum("the link names operationId 'logout'" in line for line in failed) == 2
