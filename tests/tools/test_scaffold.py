"""Tests of operations without a finished handler: check-spec lists them, scaffold writes stubs, 501 in development."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from click.testing import CliRunner

import vora.rest.handlers
from tests.harness.rest import assert_error
from vora.app import create_app
from vora.cli import main
from vora.core.settings import DEFAULT_SPEC_DIR, Settings
from vora.http.connexion import UnbuiltHandlers
from vora.http.operations import Binding, UnboundOperations, binding_of, spec_operations
from vora.tools.scaffold import scaffold
from vora.tools.spec_check import check_handlers

SCRATCH_MODULE = "vora.rest.handlers.scratch"
FORWARD = {
    "tags": ["Scratch"],
    "summary": "Forward calls",
    "operationId": "callForward",
    "parameters": [
        {"$ref": "#/components/parameters/Identity"},
        {"name": "until", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "X-Trace", "in": "header", "schema": {"type": "string"}},
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["target"],
                    "properties": {"target": {"$ref": "#/components/schemas/Identity"}},
                }
            }
        },
    },
    "responses": {"200": {"description": "Forwarding set"}},
    "security": [{"security_auth": ["scope.vora.identities"]}],
}
PING = {
    "tags": ["Scratch"],
    "summary": "Ping",
    "operationId": "scratchPing",
    "responses": {"204": {"description": "Pong"}},
    "security": [],
}


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """Copy spec/ and add two Scratch operations that no handler serves."""
    target = tmp_path / "spec"
    shutil.copytree(DEFAULT_SPEC_DIR, target)
    path = target / "vora.yaml"
    document = yaml.safe_load(path.read_text())
    document["paths"]["/identity/{identity}/callForward"] = {"post": FORWARD}
    document["paths"]["/scratch/ping"] = {"get": PING}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


@pytest.fixture
def handlers_dir(tmp_path: Path) -> Iterator[Path]:
    """Add a scratch directory to the vora.rest.handlers package, and forget what was imported from it afterwards."""
    directory = tmp_path / "handlers"
    directory.mkdir()
    vora.rest.handlers.__path__.append(str(directory))
    try:
        yield directory
    finally:
        vora.rest.handlers.__path__.remove(str(directory))
        sys.modules.pop(SCRATCH_MODULE, None)


def _operation(spec_dir: Path, operation_id: str) -> Any:
    spec = yaml.safe_load((spec_dir / "vora.yaml").read_text())
    return next(op for op in spec_operations("vora.yaml", spec) if op.operation_id == operation_id)


def test_the_repository_has_no_unfinished_operation() -> None:
    """Every operation of both served documents has a finished handler today."""
    assert check_handlers(DEFAULT_SPEC_DIR) == []


def test_check_spec_lists_operations_without_handler(spec_dir: Path, handlers_dir: Path) -> None:
    """`vora check-spec` names each unbound operation with the command that scaffolds it, and fails."""
    result = CliRunner().invoke(main, ["check-spec"], env={"VORA_SPEC_DIR": str(spec_dir)})
    assert result.exit_code == 1
    handler = "vora.rest.handlers.scratch.callForward"
    assert f"POST /identity/{{identity}}/callForward (callForward) has no handler {handler}" in result.output
    assert "`vora scaffold scratchPing`" in result.output


def test_scaffold_writes_a_typed_stub_and_a_test(spec_dir: Path, handlers_dir: Path, tmp_path: Path) -> None:
    """The stub takes the spec's path and query parameters, the body and token_info, typed, and lints clean."""
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    written = scaffold(spec_dir, "callForward", handlers_dir, tests_dir)
    assert written == [handlers_dir / "scratch.py", tests_dir / "test_call_forward.py"]
    operation = _operation(spec_dir, "callForward")
    assert binding_of(operation) is Binding.SCAFFOLDED
    from vora.rest.handlers.scratch import callForward  # type: ignore[import-not-found]  # noqa: PLC0415 - just written

    assert str(inspect.signature(callForward)) == (
        "(identity: 'str', body: 'Body', token_info: 'dict[str, Any]', until: 'int | None' = None)"
        " -> 'tuple[Body, int]'"
    )
    assert check_handlers(spec_dir) == [
        "vora.yaml: POST /identity/{identity}/callForward (callForward) is scaffolded but not implemented: "
        "vora.rest.handlers.scratch.callForward still raises OperationNotBuilt",
        "vora.yaml: GET /scratch/ping (scratchPing) has no handler vora.rest.handlers.scratch.scratchPing; "
        "`vora scaffold scratchPing` writes one",
    ]
    source = (handlers_dir / "scratch.py").read_text()
    for word in ("TODO", "FIXME", "XXX", "NotImplementedError"):
        assert word not in source
    ruff = Path(sys.executable).parent / "ruff"
    config = str(DEFAULT_SPEC_DIR.parent / "pyproject.toml")
    # I001 aside: outside the repository ruff cannot know that vora.rest.handlers.scratch is first-party.
    for command in (["check", "--extend-ignore", "I001"], ["format", "--check"]):
        linted = subprocess.run(
            [str(ruff), *command, "--config", config, *map(str, written)], capture_output=True, text=True, check=False
        )
        assert linted.returncode == 0, linted.stdout + linted.stderr
    compile((tests_dir / "test_call_forward.py").read_text(), "test_call_forward.py", "exec")


def test_scaffold_adds_to_an_existing_module(spec_dir: Path, handlers_dir: Path, tmp_path: Path) -> None:
    """A second stub of the same tag goes into the same module, after the first."""
    scaffold(spec_dir, "callForward", handlers_dir, tmp_path)
    scaffold(spec_dir, "scratchPing", handlers_dir, tmp_path)
    source = (handlers_dir / "scratch.py").read_text()
    assert source.index("def callForward(") < source.index("def scratchPing() -> tuple[Body, int]:")
    assert check_handlers(spec_dir)[1].endswith("scratch.scratchPing still raises OperationNotBuilt")


def test_scaffold_refuses_a_bound_operation(tmp_path: Path) -> None:
    """Scaffolding an operation that has a handler is an error naming it, and writes nothing."""
    result = CliRunner().invoke(main, ["scaffold", "setup"])
    assert result.exit_code == 1
    assert "already has a handler: vora.rest.handlers.session.setup" in result.output


def test_unfinished_operations_answer_501_in_development(
    spec_dir: Path,
    handlers_dir: Path,
    tmp_path: Path,
    settings: Settings,
    redisdb: redis.Redis,
    auth: Callable[..., dict[str, str]],
) -> None:
    """In development a scaffolded and an unbound operation answer 501 in the error shape; the rest still work."""
    scaffold(spec_dir, "callForward", handlers_dir, tmp_path)
    client = create_app(settings.with_changes(spec_dir=spec_dir, development=True)).test_client()
    forwarded = client.post("/vora/identity/910111000/callForward", json={"target": "602128708"}, headers=auth("alice"))
    assert_error(forwarded, 501, "Operation callForward is in the spec but not implemented yet")
    assert_error(client.get("/vora/scratch/ping"), 501, "no handler", "vora scaffold scratchPing")
    refused = client.post("/vora/identity/910111000/callForward", json={}, headers=auth("alice"))
    assert_error(refused, 400, "target")
    assert client.get("/vora/health/liveness").status_code == 204


def test_a_production_start_refuses_unfinished_operations(
    spec_dir: Path, handlers_dir: Path, tmp_path: Path, settings: Settings
) -> None:
    """Without VORA_DEVELOPMENT the app does not start, and says which operations lack a finished handler."""
    scaffold(spec_dir, "callForward", handlers_dir, tmp_path)
    with pytest.raises(UnboundOperations) as refused:
        create_app(settings.with_changes(spec_dir=spec_dir))
    message = str(refused.value)
    assert "2 operation(s) of vora.yaml are not implemented" in message
    assert "callForward) is scaffolded" in message
    assert "scratchPing) has no handler" in message
    assert "VORA_DEVELOPMENT=1" in message


def test_development_is_read_from_the_environment() -> None:
    """VORA_DEVELOPMENT=1 turns development on; it is off by default."""
    assert Settings.from_env({"VORA_DEVELOPMENT": "1"}).development
    assert not Settings.from_env({}).development


def test_a_handler_class_the_app_does_not_build_stops_the_start(
    spec_dir: Path, handlers_dir: Path, settings: Settings
) -> None:
    """A new tag's handler class that the app is not given fails the start, naming the class and where to add it."""
    (handlers_dir / "scratch.py").write_text(
        "class ScratchHandlers:\n"
        "    def scratchPing(self) -> tuple[dict[str, str], int]:\n"
        "        return {}, 204\n"
        "    def callForward(self) -> tuple[dict[str, str], int]:\n"
        "        return {}, 200\n"
    )
    assert check_handlers(spec_dir) == []  # the class is there: only the app can tell it is not built
    with pytest.raises(UnbuiltHandlers) as refused:
        create_app(settings.with_changes(spec_dir=spec_dir, development=True))
    message = str(refused.value)
    assert "vora.rest.handlers.scratch.ScratchHandlers." in message
    assert "add 'scratch': ScratchHandlers(...)" in message
    assert "vora/rest/app.py" in message


def test_scaffold_names_an_operation_without_tag_instead_of_failing(spec_dir: Path) -> None:
    """`vora scaffold` on a document with a tagless operation says which and why, where it raised KeyError."""
    path = spec_dir / "vora.yaml"
    document = yaml.safe_load(path.read_text())
    del document["paths"]["/scratch/ping"]["get"]["tags"]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    result = CliRunner().invoke(main, ["scaffold", "scratchPing"], env={"VORA_SPEC_DIR": str(spec_dir)})
    assert result.exit_code == 1
    assert "GET /scratch/ping has no tags: its first tag names the handler's module" in result.output
