"""Find the handler of each spec operation: bound, scaffolded (not built yet) or missing."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vora.core.errors import VoraError

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# The documents Connexion binds to handlers, each to a handler package of its own (one module a tag).
HANDLER_PACKAGES = {
    "vora.yaml": "vora.rest.handlers",
    "vora-server.yaml": "vora.server_api.handlers",
    # The console's simulator runs the server API's rules: its handlers live with them.
    "vora-console.yaml": "vora.server_api.handlers",
}
SERVED_DOCUMENTS = tuple(HANDLER_PACKAGES)
NOT_BUILT_MARK = "__vora_not_built__"
# The 501 of Connexion's resolver-error path, in development only.
NOT_IMPLEMENTED = 501

F = TypeVar("F", bound=Callable[..., Any])


class Binding(Enum):
    """How an operation's handler stands."""

    BOUND = "bound"
    SCAFFOLDED = "scaffolded"
    MISSING = "missing"


@dataclass(frozen=True)
class SpecOperation:
    """One operation of a served document, with where its handler lives (<package>.<first tag>)."""

    document: str
    path: str
    method: str
    operation_id: str
    tag: str
    operation: dict[str, Any]

    @property
    def package(self) -> str:
        """Return the dotted name of the document's handler package."""
        return HANDLER_PACKAGES[self.document]

    @property
    def module(self) -> str:
        """Return the dotted name of the handler's module."""
        return f"{self.package}.{self.tag.lower()}"

    @property
    def handler(self) -> str:
        """Return the dotted name of the handler."""
        return f"{self.module}.{self.operation_id}"

    def title(self) -> str:
        """Name the operation for people: document, method, path and operationId."""
        return f"{self.document}: {self.method.upper()} {self.path} ({self.operation_id})"


class OperationNotBuilt(VoraError):
    """A scaffolded operation was called before anyone implemented it (501, development only)."""

    status = NOT_IMPLEMENTED

    def __init__(self, operation_id: str) -> None:
        super().__init__(f"Operation {operation_id} is in the spec but not implemented yet")


class UnboundOperations(RuntimeError):
    """A production start found operations without a finished handler."""


def not_built_yet(function: F) -> F:
    """Mark a scaffolded handler, so that check-spec lists it and a production start refuses it."""
    setattr(function, NOT_BUILT_MARK, True)
    return function


def spec_operations(document: str, spec: dict[str, Any]) -> list[SpecOperation]:
    """List a document's operations in the order it declares them."""
    return [
        SpecOperation(document, path, method, operation["operationId"], operation["tags"][0], operation)
        for path, item in spec.get("paths", {}).items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def binding_of(operation: SpecOperation) -> Binding:
    """Import an operation's handler module and tell whether its function is there and finished."""
    try:
        module = importlib.import_module(operation.module)
    except ModuleNotFoundError as exc:
        if exc.name != operation.module:
            raise  # the module is there but imports something missing: a bug, never "no handler"
        return Binding.MISSING
    if any(callable(getattr(handlers, operation.operation_id, None)) for handlers in handler_classes(module)):
        return Binding.BOUND
    function = getattr(module, operation.operation_id, None)
    if not callable(function):
        return Binding.MISSING
    return Binding.SCAFFOLDED if getattr(function, NOT_BUILT_MARK, False) else Binding.BOUND


def handler_classes(module: Any) -> list[type]:
    """Return the handler classes a handler module defines (SessionHandlers...), whose methods operations bind to."""
    return [
        value
        for name, value in vars(module).items()
        if isinstance(value, type) and value.__module__ == module.__name__ and name.endswith("Handlers")
    ]


def unfinished_operations(
    spec_dir: Path, documents: tuple[str, ...] = SERVED_DOCUMENTS
) -> list[tuple[SpecOperation, Binding]]:
    """List every operation of the served documents whose handler is missing or only scaffolded."""
    found: list[tuple[SpecOperation, Binding]] = []
    for document in documents:
        spec = yaml.safe_load((spec_dir / document).read_text())
        for operation in spec_operations(document, spec):
            binding = binding_of(operation)
            if binding is not Binding.BOUND:
                found.append((operation, binding))
    return found


def describe(operation: SpecOperation, binding: Binding) -> str:
    """Say on one line what an unfinished operation lacks and how to go on."""
    if binding is Binding.MISSING:
        scaffold = f"`vora scaffold {operation.operation_id}` writes one"
        return f"{operation.title()} has no handler {operation.handler}; {scaffold}"
    return f"{operation.title()} is scaffolded but not implemented: {operation.handler} still raises OperationNotBuilt"


def resolver_error_status(development: bool, spec_dir: Path, document: str) -> int | None:
    """Return 501 for Connexion's resolver-error path in development; refuse unfinished operations otherwise."""
    if development:
        return NOT_IMPLEMENTED
    unfinished = unfinished_operations(spec_dir, (document,))
    if unfinished:
        lines = "\n".join(f"  {describe(op, binding)}" for op, binding in unfinished)
        raise UnboundOperations(
            f"{len(unfinished)} operation(s) of {document} are not implemented; a production start refuses them "
            f"(set VORA_DEVELOPMENT=1 to answer them 501 while you build them):\n{lines}"
        )
    return None
