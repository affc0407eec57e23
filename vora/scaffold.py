"""Write a typed handler stub and a test module skeleton for a spec operation that has no handler."""

from __future__ import annotations

import importlib
import keyword
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vora.operations import (
    SERVED_DOCUMENTS,
    Binding,
    SpecOperation,
    binding_of,
    spec_operations,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
HANDLERS_DIR = REPO_ROOT / "vora" / "handlers"
HANDLER_TESTS_DIR = REPO_ROOT / "tests" / "handlers"
SCALAR_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}
PLACEHOLDERS = {"str": '""', "int": "0", "float": "0.0", "bool": "False"}
# Connexion passes path, query and body values to a handler; headers and cookies stay on the request.
PASSED_LOCATIONS = ("path", "query")


class ScaffoldError(Exception):
    """The operation is unknown, already has a handler, or a file would be overwritten."""


@dataclass(frozen=True)
class Argument:
    """One argument of a handler stub."""

    name: str
    annotation: str
    default: str | None  # Python source of the default; None when the argument is required

    def source(self) -> str:
        """Write the argument as it stands in the signature."""
        written = f"{self.name}: {self.annotation}"
        return written if self.default is None else f"{written} = {self.default}"


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    """Follow local $refs until a node is not one."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def python_type(spec: dict[str, Any], schema: Any) -> str:
    """Name the Python type Connexion hands over for a schema."""
    schema = _resolve(spec, schema) or {}
    for part in schema.get("allOf", []):
        named = python_type(spec, part)
        if named != "Any":
            return named
    kind = schema.get("type")
    if kind in SCALAR_TYPES:
        return SCALAR_TYPES[kind]
    if kind == "array":
        return f"list[{python_type(spec, schema.get('items', {}))}]"
    if kind == "object":
        return "Body"
    return "Any"


def arguments_of(spec: dict[str, Any], operation: SpecOperation, path_parameters: list[Any]) -> list[Argument]:
    """List a handler's arguments: path and query parameters, the body, and token_info under OAuth2."""
    required: list[Argument] = []
    optional: list[Argument] = []
    declared = {}
    for raw in [*path_parameters, *operation.operation.get("parameters", [])]:
        parameter = _resolve(spec, raw)
        declared[(parameter["name"], parameter["in"])] = parameter  # an operation's own overrides the path's
    for (name, location), parameter in declared.items():
        if location not in PASSED_LOCATIONS:
            continue
        schema = _resolve(spec, parameter.get("schema", {})) or {}
        annotation = python_type(spec, schema)
        if parameter.get("required") or location == "path":
            required.append(Argument(name, annotation, None))
        elif "default" in schema:
            optional.append(Argument(name, annotation, repr(schema["default"])))
        else:
            optional.append(Argument(name, f"{annotation} | None", "None"))
    body = operation.operation.get("requestBody")
    if body is not None:
        body = _resolve(spec, body)
        if body.get("required"):
            required.append(Argument("body", "Body", None))
        else:
            optional.append(Argument("body", "Body | None", "None"))
    if _uses_oauth2(spec, operation):
        required.append(Argument("token_info", "dict[str, Any]", None))
    return required + optional


def _uses_oauth2(spec: dict[str, Any], operation: SpecOperation) -> bool:
    """Tell whether the operation's security asks for an OAuth2 token (whose claims Connexion passes)."""
    requirements = operation.operation.get("security", spec.get("security", []))
    schemes = spec.get("components", {}).get("securitySchemes", {})
    return any(schemes.get(name, {}).get("type") == "oauth2" for requirement in requirements for name in requirement)


def snake_case(name: str) -> str:
    """Turn an operationId like eventHistory into event_history."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _docstring(operation: SpecOperation) -> str:
    """Write the stub's one-line docstring from the spec's summary."""
    summary = str(operation.operation.get("summary") or f"Answer {operation.method.upper()} {operation.path}")
    return summary.strip().rstrip(".").replace('"""', "'") + "."


def handler_source(spec: dict[str, Any], operation: SpecOperation, path_parameters: list[Any]) -> str:
    """Write the stub function of an operation."""
    arguments = arguments_of(spec, operation, path_parameters)
    signature = ", ".join(argument.source() for argument in arguments)
    name = operation.operation_id
    names = [name, *(a.name for a in arguments)]
    misnamed = {"N802": name != snake_case(name), "N803": any(a.name != snake_case(a.name) for a in arguments)}
    rules = [rule for rule, bad in misnamed.items() if bad]
    noqa = f"  # noqa: {', '.join(rules)} - named by the spec" if rules else ""
    if any(keyword.iskeyword(n) for n in names):
        raise ScaffoldError(f"{operation.title()}: a Python keyword cannot name a handler or an argument")
    return (
        "\n\n@not_built_yet\n"
        f"def {name}({signature}) -> tuple[Body, int]:{noqa}\n"
        f'    """{_docstring(operation)}"""\n'
        f"    raise OperationNotBuilt({name!r})\n"
    )


def module_header(operation: SpecOperation) -> str:
    """Write the top of a new handler module for a tag."""
    return (
        f'"""Handlers of the {operation.tag} tag."""\n\n'
        "from __future__ import annotations\n\n"
        "from typing import Any\n\n"
        "from vora.operations import OperationNotBuilt, not_built_yet\n\n"
        "Body = dict[str, Any]\n"
    )


def _with_imports(source: str) -> str:
    """Add what a stub needs to an existing handler module that lacks it (the imports are sorted afterwards)."""
    needed = ""
    if "import OperationNotBuilt, not_built_yet" not in source:
        needed += "from vora.operations import OperationNotBuilt, not_built_yet\n"
    has_body = re.search(r"^Body = ", source, re.MULTILINE) is not None
    if not has_body and not re.search(r"^from typing import .*\bAny\b", source, re.MULTILINE):
        needed += "from typing import Any\n"
    anchor = "from __future__ import annotations\n"
    head, found, tail = source.partition(anchor)
    source = f"{head}{anchor}\n{needed}{tail}" if found else needed + source
    return source if has_body else source.rstrip("\n") + "\n\nBody = dict[str, Any]\n"


def skeleton_source(spec: dict[str, Any], operation: SpecOperation, path_parameters: list[Any]) -> str:
    """Write a test module skeleton whose first test fails once the handler is implemented."""
    arguments = [a for a in arguments_of(spec, operation, path_parameters) if a.default is None]
    placeholders = ", ".join(f"{a.name}={_placeholder(a.annotation)}" for a in arguments)
    title = f"{operation.operation_id} ({operation.method.upper()} {operation.path}, {operation.document})"
    snake = snake_case(operation.operation_id)
    return (
        f'"""Tests of {title}."""\n\n'
        "from __future__ import annotations\n\n"
        "import pytest\n\n"
        f"from {operation.module} import {operation.operation_id}\n"
        "from vora.operations import OperationNotBuilt\n\n\n"
        f"def test_{snake}_is_not_built_yet() -> None:\n"
        f'    """Check that {operation.operation_id} is not built yet; replace with real tests as you build it."""\n'
        "    with pytest.raises(OperationNotBuilt):\n"
        f"        {operation.operation_id}({placeholders})\n"
    )


def _placeholder(annotation: str) -> str:
    """Write a value of a type for the skeleton's call of the stub."""
    if annotation in PLACEHOLDERS:
        return PLACEHOLDERS[annotation]
    return "[]" if annotation.startswith("list[") else "{}"


def find_operation(spec_dir: Path, operation_id: str) -> tuple[dict[str, Any], SpecOperation, list[Any]]:
    """Find an operation by operationId in the served documents, with its document and its path's parameters."""
    for document in SERVED_DOCUMENTS:
        spec = yaml.safe_load((spec_dir / document).read_text())
        for operation in spec_operations(document, spec):
            if operation.operation_id == operation_id:
                return spec, operation, spec["paths"][operation.path].get("parameters", [])
    raise ScaffoldError(f"no operation {operation_id} in {', '.join(SERVED_DOCUMENTS)}")


def scaffold(
    spec_dir: Path, operation_id: str, handlers_dir: Path = HANDLERS_DIR, tests_dir: Path = HANDLER_TESTS_DIR
) -> list[Path]:
    """Write the operation's handler stub into its tag's module and a test module; return the files written."""
    spec, operation, path_parameters = find_operation(spec_dir, operation_id)
    if binding_of(operation) is not Binding.MISSING:
        raise ScaffoldError(f"{operation.title()} already has a handler: {operation.handler}")
    module_path = handlers_dir / f"{operation.tag.lower()}.py"
    test_path = tests_dir / f"test_{snake_case(operation.operation_id)}.py"
    if test_path.exists():
        raise ScaffoldError(f"{test_path} exists; move it away or pick another name")
    stub = handler_source(spec, operation, path_parameters)
    if module_path.exists():
        module_path.write_text(_with_imports(module_path.read_text()).rstrip("\n") + "\n" + stub)
    else:
        module_path.write_text(module_header(operation) + stub)
    test_path.write_text(skeleton_source(spec, operation, path_parameters))
    written = [module_path, test_path]
    _format(written)
    # A later look in this process must read the module as now written, not as first imported.
    sys.modules.pop(operation.module, None)
    importlib.invalidate_caches()
    return written


def _format(paths: list[Path]) -> None:
    """Lay the written files out as `ruff format` does, when the dev tools are installed (`make install`)."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is not None:
        for command in (["check", "--fix", "--select", "I"], ["format"]):
            subprocess.run([ruff, *command, "--quiet", *map(str, paths)], check=False, capture_output=True, timeout=60)
