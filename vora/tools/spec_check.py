"""Check the spec documents: valid, and naming the same events as the code."""

from __future__ import annotations

import difflib
import importlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from vora.core.catalog import LIFECYCLE_EVENTS, SUBSCRIBABLE_EVENTS, Family
from vora.core.identities import IDENTITY_PATTERN
from vora.events.publisher import ASYNCAPI_FILE
from vora.http.operations import (
    HANDLER_PACKAGES,
    HTTP_METHODS,
    SERVED_DOCUMENTS,
    Binding,
    SpecOperation,
    describe,
    handler_classes,
    spec_operations,
    unfinished_operations,
)
from vora.push.rules import HOLDUP_NOT_READY, HOLDUP_READY, PUSH_NOTIFICATION
from vora.server_api.rules import SERVER_SPEC_FILE
from vora.server_api.simulator import SIMULATOR_PATH, SIMULATOR_SPEC_FILE
from vora.store.streams import EVENT_ID_SCHEMA_PATTERN

WEBHOOKS_FILE = "vora-webhooks.yaml"
# What the console's simulator answers as the server API does: the same schemas, word for word.
CONSOLE_SHARED_SCHEMAS = (
    *("Text", "CallData", "PresenceData", "RecordingData"),
    *("EventId", "SessionId", "Subscription", "Session", "SessionList", "ResponseStatusVoraError"),
)

# Where `make install` puts the official AsyncAPI JSON Schemas (npm @asyncapi/specs).
DEFAULT_ASYNCAPI_SCHEMA = (
    Path(__file__).resolve().parents[2] / ".venv/asyncapi/node_modules/@asyncapi/specs/schemas/2.6.0.json"
)
SERVER_FAMILY_SCHEMAS = {Family.CALL: "CallEvent", Family.PRESENCE: "PresenceEvent", Family.RECORDING: "RecordingEvent"}
FAMILY_EVENT_SCHEMAS = {Family.CALL: "CallEvent", Family.PRESENCE: "PresenceEvent", Family.RECORDING: "RecordingEvent"}


# How the OpenAPI validator names the operation of a problem it gives no JSON path for (a path parameter).
OPERATION_IN_MESSAGE = re.compile(r"for '(?P<method>[a-z]+)' operation in '(?P<path>/[^']*)'")
PATH_IN_MESSAGE = re.compile(r"in '(?P<path>/[^']*)'")
UNRESOLVED_PATH_PARAMETER = re.compile(r"^Path parameter '[^']+' .* was not resolved")
# Every error VORA answers has this shape (vora.core.errors), as each document's description says.
ERROR_SHAPE_REF = "#/components/schemas/ResponseStatusVoraError"
# Where an event type is added or removed: the code's catalogue and every list of the documents, together.
CATALOGUE_HINT = (
    "an event type is added in vora/core/catalog.py (SUBSCRIBABLE_EVENTS) and in every list that "
    "docs/api-owners.md ('Adding an event type') names, in the same order"
)
TAB_HINT = "YAML indents with spaces only: replace the tab with spaces"
# How much of a validator's message is printed: its own messages repeat whole parts of the document.
MESSAGE_LIMIT = 300


def _pointer(tokens: tuple[str, ...]) -> str:
    """Return the JSON Pointer (RFC 6901) of a place in a document."""
    return "".join("/" + token.replace("~", "~0").replace("/", "~1") for token in tokens)


def _walk(node: yaml.Node, tokens: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], yaml.Node]]:
    """Yield every node of a composed YAML document with the tokens of its place (mapping keys, list indexes)."""
    yield tokens, node
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _walk(value, (*tokens, str(key.value)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _walk(item, (*tokens, str(index)))


def _line_of(path: Path, root: yaml.Node | None, tokens: tuple[str, ...]) -> str:
    """Return "file:line" of a place in a document (the line of the nearest node found there)."""
    if root is None:
        return str(path)  # an empty document has no lines
    node = root
    for token in tokens:
        if isinstance(node, yaml.MappingNode):
            found = next((value for key, value in node.value if str(key.value) == token), None)
        elif isinstance(node, yaml.SequenceNode) and token.isdigit() and int(token) < len(node.value):
            found = node.value[int(token)]
        else:
            found = None
        if found is None:
            break
        node = found
    return f"{path}:{node.start_mark.line + 1}"


def _resolve(document: Any, pointer: str) -> tuple[bool, Any, str]:
    """Follow a JSON Pointer: (found, the deepest value reached, the token not found there)."""
    value = document
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return False, value, token
    return True, value, ""


def _suggestion(parent: Any, token: str) -> str:
    """Name the closest existing key to a missing one, if any is close."""
    if not isinstance(parent, dict):
        return ""
    close = difflib.get_close_matches(token, [str(key) for key in parent], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _yaml_problems(path: Path) -> list[str]:
    """Report what keeps a document from being read as its author wrote it: bad YAML, and keys given twice."""
    try:
        root = yaml.compose(path.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        said = " ".join(part for part in (exc.context, exc.problem) if part)
        begun = exc.context_mark
        if begun is not None and mark is not None and begun.line != mark.line:
            said += f" (what is unfinished began on line {begun.line + 1})"
        tab = "\\t" in said or "tab" in said
        hint = TAB_HINT if tab else "fix the YAML there (a bracket, quote or indentation)"
        return [f"{where}: not YAML: {said}; {hint}"]
    problems = []
    for tokens, node in _walk(root) if root is not None else ():
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[str, int] = {}
        for key, _ in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if name in first:
                problems.append(
                    f"{path}:{line}: {_pointer((*tokens, name))}: duplicate key {name!r} "
                    f"(first on line {first[name]}): a YAML reader keeps only the last one; keep one"
                )
            first.setdefault(name, line)
    return problems


def check_yaml(spec_dir: Path) -> list[str]:
    """Report each spec document that is not YAML, or that gives a key twice in one mapping."""
    return [problem for path in sorted(spec_dir.glob("*.yaml")) for problem in _yaml_problems(path)]


def _reference_problems(path: Path, document: Any, root: yaml.Node) -> list[str]:
    """List each local $ref that names nothing, and each link to an operationId the document does not have."""
    problems = []
    operation_ids = {
        operation["operationId"]
        for item in (document.get("paths") or {}).values()
        if isinstance(item, dict)
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    for tokens, node in _walk(root):
        if not isinstance(node, yaml.ScalarNode) or not tokens:
            continue
        where = f"{_line_of(path, root, tokens)}: {_pointer(tokens)}"
        if tokens[-1] == "$ref" and str(node.value).startswith("#"):
            ref = str(node.value)
            found, parent, missing = _resolve(document, ref[1:])
            if not found:
                problems.append(f"{where}: $ref {ref!r} names nothing in this document{_suggestion(parent, missing)}")
        elif tokens[-1] == "operationId" and len(tokens) >= 3 and tokens[-3] == "links":
            if node.value not in operation_ids:
                hint = _suggestion(dict.fromkeys(operation_ids), str(node.value))
                problems.append(f"{where}: the link names operationId {node.value!r}, which no operation has{hint}")
    return problems


def _place_named_in(message: str) -> tuple[str, ...]:
    """Find the operation or path a validator message names, for the messages that carry no place of their own."""
    operation = OPERATION_IN_MESSAGE.search(message)
    if operation:
        return ("paths", operation["path"], operation["method"])
    named = PATH_IN_MESSAGE.search(message)
    return ("paths", named["path"]) if named else ()


def _validator_problem(path: Path, root: yaml.Node, exc: Exception) -> str:
    """Say what the validator refused and where, without the parts of the document its message repeats."""
    place = getattr(exc, "absolute_path", None)
    message = str(getattr(exc, "message", "") or exc).split("\n", 1)[0]
    instance = repr(getattr(exc, "instance", None))
    if len(instance) > 60 and message.startswith(instance):
        message = "this value" + message[len(instance) :]
    if len(message) > MESSAGE_LIMIT:
        message = message[:MESSAGE_LIMIT] + "…"
    if place is None:
        return f"{path}: {message}"
    tokens = tuple(str(token) for token in place)
    tokens = tokens or _place_named_in(message)
    if UNRESOLVED_PATH_PARAMETER.search(message):
        message += "; declare it in the operation's (or the path's) parameters with `in: path` and `required: true`"
    return f"{_line_of(path, root, tokens)}: {_pointer(tokens) or '/'}: {message}"


def _validated_openapi(path: Path) -> tuple[Any, list[str]]:
    """Read an OpenAPI document (3.0 or 3.1) and return it with what is wrong in it, each with file, line and place."""
    document, _ = read_from_filename(str(path))
    root = yaml.compose(path.read_text())
    if root is None:
        return document, [f"{path}: the document is empty"]
    problems = _reference_problems(path, document, root)
    if problems:
        # The validator would stop at the first of them, repeating the whole document in its message.
        return document, problems
    try:
        validate(document)
    except Exception as exc:  # noqa: BLE001 - any validator failure is the report
        return document, [_validator_problem(path, root, exc)]
    return document, []


def _catalogue_mismatch(path: Path, tokens: tuple[str, ...], what: str, declared: list[Any], wanted: list[str]) -> str:
    """Say where a list of event types departs from the catalogue, what it adds or lacks, and where each is added."""
    where = _line_of(path, yaml.compose(path.read_text()), tokens)
    added = [name for name in declared if name not in wanted]
    lacking = [name for name in wanted if name not in declared]
    said = "; ".join(
        part
        for part in (
            f"lists {added}, which vora.core.catalog does not" if added else "",
            f"does not list {lacking}" if lacking else "",
            "" if added or lacking else f"lists them in another order than vora.core.catalog: {wanted}",
        )
        if part
    )
    return f"{where}: {_pointer(tokens)}: {what} {said}; {CATALOGUE_HINT}"


def _check_catalogue_terms(path: Path, problems: list[str]) -> dict[str, Any]:
    """Hold a document's EventType enum and Identity pattern to the code; return its schemas."""
    schemas: dict[str, Any] = yaml.safe_load(path.read_text())["components"]["schemas"]
    enum = schemas["EventType"]["enum"]
    if list(enum) != list(SUBSCRIBABLE_EVENTS):
        tokens = ("components", "schemas", "EventType", "enum")
        problems.append(_catalogue_mismatch(path, tokens, "EventType enum", enum, list(SUBSCRIBABLE_EVENTS)))
    if schemas["Identity"]["pattern"] != IDENTITY_PATTERN:
        problems.append(f"{path}: the Identity pattern differs from vora.core.identities.IDENTITY_PATTERN")
    return schemas


def check_openapi(spec_dir: Path) -> list[str]:
    """Validate spec/vora.yaml and compare its EventType enum and Identity pattern with the code."""
    path = spec_dir / "vora.yaml"
    _, problems = _validated_openapi(path)
    _check_catalogue_terms(path, problems)
    return problems


# The event channel's two transports (vora.ws.endpoint serves both): each sends the same messages.
EVENT_CHANNELS = ("/vora/ws", "/vora/sse")


def asyncapi_events(document: dict[str, Any], channel: str = "/vora/ws") -> list[str]:
    """List the message names an AsyncAPI channel sends, in order."""
    one_of = document["channels"][channel]["subscribe"]["message"]["oneOf"]
    return [ref["$ref"].rsplit("/", 1)[1] for ref in one_of]


def check_asyncapi(spec_dir: Path, schema_path: Path | None = DEFAULT_ASYNCAPI_SCHEMA) -> list[str]:
    """Validate the AsyncAPI document and compare its messages with the catalogue."""
    path = spec_dir / ASYNCAPI_FILE
    text = path.read_text()
    document = yaml.safe_load(text)
    root = yaml.compose(text)
    problems: list[str] = _reference_problems(path, document, root) if root is not None else []
    if schema_path is not None:
        if not schema_path.is_file():
            # A missing official schema is a failed check, never a silent "spec OK".
            return [f"{schema_path}: the official AsyncAPI 2.6.0 schema is missing; run `make install`"]
        validator = jsonschema.Draft7Validator(json.loads(schema_path.read_text()))
        for error in validator.iter_errors(document):
            tokens = tuple(map(str, error.path))
            where = _line_of(path, root, tokens) if root is not None else str(path)
            problems.append(f"{where}: {_pointer(tokens) or '/'}: {error.message[:MESSAGE_LIMIT]}")
    expected = [*SUBSCRIBABLE_EVENTS, *LIFECYCLE_EVENTS]
    if sorted(document["channels"]) != sorted(EVENT_CHANNELS):
        described = sorted(document["channels"])
        problems.append(f"{path}: channels {described} differ from the served {list(EVENT_CHANNELS)}")
    for channel in EVENT_CHANNELS:
        sent = asyncapi_events(document, channel) if channel in document["channels"] else []
        if sent != expected:
            tokens = ("channels", channel, "subscribe", "message", "oneOf")
            problems.append(_catalogue_mismatch(path, tokens, f"{channel} messages", sent, expected))
    messages = document["components"]["messages"]
    for name in expected:
        if messages.get(name, {}).get("name") != name:
            problems.append(
                f"{path}: components/messages/{name} is missing, or its name is not {name!r}; {CATALOGUE_HINT}"
            )
    schemas = document["components"]["schemas"]
    for family, schema_name in FAMILY_EVENT_SCHEMAS.items():
        declared = schemas[schema_name]["allOf"][1]["properties"]["type"]["enum"]
        wanted = [t for t, f in SUBSCRIBABLE_EVENTS.items() if f is family]
        if declared != wanted:
            tokens = ("components", "schemas", schema_name, "allOf", "1", "properties", "type", "enum")
            problems.append(_catalogue_mismatch(path, tokens, f"{schema_name} types", declared, wanted))
    return problems


def check_server_openapi(spec_dir: Path) -> list[str]:
    """Validate spec/vora-server.yaml and hold its enums, patterns and payload schemas equal to the others."""
    path = spec_dir / SERVER_SPEC_FILE
    _, problems = _validated_openapi(path)
    schemas = _check_catalogue_terms(path, problems)
    asyncapi_schemas = yaml.safe_load((spec_dir / ASYNCAPI_FILE).read_text())["components"]["schemas"]
    for name in ("Text", "CallData", "PresenceData", "RecordingData"):
        if _without_description(schemas[name]) != _without_description(asyncapi_schemas[name]):
            problems.append(f"{path}: schema {name} differs from the one in {ASYNCAPI_FILE}")
    reasons = asyncapi_schemas["ChannelTerminatedData"]["properties"]["reason"]["enum"]
    unknown = [r for r in schemas["DisconnectReason"]["enum"] if r not in reasons]
    if unknown:
        problems.append(f"{path}: DisconnectReason {unknown} are not channelTerminated reasons in {ASYNCAPI_FILE}")
    _check_families(path, schemas, "PublishRequest", problems)
    return problems


def _check_families(path: Path, schemas: dict[str, Any], request: str, problems: list[str]) -> None:
    """Hold each family schema's types, and the request's discriminator, to the catalogue."""
    publish = schemas[request]
    for family, schema_name in SERVER_FAMILY_SCHEMAS.items():
        declared = schemas[schema_name]["properties"]["type"]["enum"]
        wanted = [t for t, f in SUBSCRIBABLE_EVENTS.items() if f is family]
        if declared != wanted:
            tokens: tuple[str, ...] = ("components", "schemas", schema_name, "properties", "type", "enum")
            problems.append(_catalogue_mismatch(path, tokens, f"{schema_name} types", declared, wanted))
        mapped = [t for t, ref in publish["discriminator"]["mapping"].items() if ref.endswith(f"/{schema_name}")]
        if mapped != wanted:
            tokens = ("components", "schemas", request, "discriminator", "mapping")
            what = f"the {request} discriminator maps to {schema_name} the types it"
            problems.append(_catalogue_mismatch(path, tokens, what, mapped, wanted))


def check_console_openapi(spec_dir: Path) -> list[str]:
    """Validate spec/vora-console.yaml and hold its enums, patterns and session schemas equal to the server API's."""
    path = spec_dir / SIMULATOR_SPEC_FILE
    _, problems = _validated_openapi(path)
    schemas = _check_catalogue_terms(path, problems)
    server_schemas = yaml.safe_load((spec_dir / SERVER_SPEC_FILE).read_text())["components"]["schemas"]
    for name in CONSOLE_SHARED_SCHEMAS:
        if _without_description(schemas[name]) != _without_description(server_schemas[name]):
            problems.append(f"{path}: schema {name} differs from the one in {SERVER_SPEC_FILE}")
    _check_families(path, schemas, "SimulatedEvent", problems)
    document = yaml.safe_load(path.read_text())
    base_path = urlsplit(document["servers"][0]["url"]).path.rstrip("/")
    outside = [p for p in document["paths"] if not f"{base_path}{p}".startswith(SIMULATOR_PATH)]
    if outside:
        problems.append(f"{path}: {outside} are outside {SIMULATOR_PATH}, the only path vora.app routes to it")
    return problems


def _without_description(schema: Any) -> Any:
    """Drop every description, at any depth: the copies may explain themselves differently."""
    if isinstance(schema, dict):
        return {k: _without_description(v) for k, v in schema.items() if k != "description"}
    if isinstance(schema, list):
        return [_without_description(item) for item in schema]
    return schema


def check_webhooks(spec_dir: Path) -> list[str]:
    """Validate the outgoing webhooks document and compare its webhooks and platforms with the code and vora.yaml."""
    path = spec_dir / WEBHOOKS_FILE
    document, problems = _validated_openapi(path)
    names = list(document.get("webhooks", {}))
    expected = [PUSH_NOTIFICATION, HOLDUP_READY, HOLDUP_NOT_READY]
    if names != expected:
        problems.append(f"{path}: webhooks {names} differ from vora.push.rules {expected}")
    push_schema = document["components"]["schemas"]["PushNotification"]["allOf"][1]["properties"]
    registration = yaml.safe_load((spec_dir / "vora.yaml").read_text())["components"]["schemas"]["PushRegistration"]
    if push_schema["platform"]["enum"] != registration["properties"]["platform"]["enum"]:
        problems.append(f"{path}: PushNotification platforms differ from PushRegistration in vora.yaml")
    return problems


@dataclass(frozen=True)
class ServedOperation:
    """One operation of a served document, with what is needed to name its place."""

    document: str
    path: Path
    root: yaml.Node | None  # the document's composed tree, for line numbers (None when it is empty)
    spec: dict[str, Any]
    spec_path: str
    method: str
    operation: dict[str, Any]

    def line(self, *tokens: str) -> str:
        """Return file:line of this operation, or of a place under it."""
        return _line_of(self.path, self.root, ("paths", self.spec_path, self.method, *tokens))


def _served_operations(spec_dir: Path) -> Iterator[ServedOperation]:
    """Yield every operation of the served documents, in document order."""
    for document in SERVED_DOCUMENTS:
        path = spec_dir / document
        text = path.read_text()
        root = yaml.compose(text)
        spec = yaml.safe_load(text) or {}
        for spec_path, item in (spec.get("paths") or {}).items():
            for method, operation in (item or {}).items():
                if method in HTTP_METHODS and isinstance(operation, dict):
                    yield ServedOperation(document, path, root, spec, spec_path, method, operation)


def check_operation_names(spec_dir: Path) -> list[str]:
    """Report each operation of the served documents without the operationId and tag that name its handler."""
    problems = []
    for served in _served_operations(spec_dir):
        where = f"{served.line()}: {served.method.upper()} {served.spec_path}"
        if not served.operation.get("operationId"):
            problems.append(f"{where} has no operationId: it names the operation's handler; add one")
        if not served.operation.get("tags"):
            problems.append(
                f"{where} has no tags: its first tag names the handler's module "
                f"({HANDLER_PACKAGES[served.document]}.<tag, lower case>); add one of the document's tags"
            )
    return problems


def _error_shape_problem(spec: dict[str, Any], response: Any) -> str | None:
    """Say how an error response misses the error shape, or None when it has it."""
    if isinstance(response, dict) and "$ref" in response:
        found, response, _ = _resolve(spec, str(response["$ref"]).removeprefix("#"))
        if not found:
            return None  # the $ref check names it
    content = (response or {}).get("content") or {}
    schema = (content.get("application/json") or {}).get("schema") or {}
    if schema.get("$ref") == ERROR_SHAPE_REF:
        return None
    if not content:
        return "has no content"
    return "has no application/json content" if "application/json" not in content else "has another schema"


def check_error_responses(spec_dir: Path) -> list[str]:
    """Report each 4xx and 5xx response of the served documents that does not answer in the error shape."""
    problems = []
    for served in _served_operations(spec_dir):
        for status, response in (served.operation.get("responses") or {}).items():
            if str(status)[0] not in "45" and str(status) != "default":
                continue
            missed = _error_shape_problem(served.spec, response)
            if missed is not None:
                tokens = ("paths", served.spec_path, served.method, "responses", str(status))
                problems.append(
                    f"{served.line('responses', str(status))}: {_pointer(tokens)}: the error response {missed}; "
                    "every error answers in the error shape: $ref one of #/components/responses "
                    "(BadRequest, NotFound...), or give it application/json with schema "
                    f"$ref '{ERROR_SHAPE_REF}'"
                )
    return problems


def check_handlers(spec_dir: Path) -> list[str]:
    """List each operation of the served documents with no handler, or with a scaffolded one not built yet."""
    unnamed = check_operation_names(spec_dir)
    if unnamed:
        return unnamed  # without its operationId and tag, no handler can be looked for
    return [
        describe(operation, binding) + (_renamed_hint(spec_dir, operation) if binding is Binding.MISSING else "")
        for operation, binding in unfinished_operations(spec_dir)
    ]


def _renamed_hint(spec_dir: Path, operation: SpecOperation) -> str:
    """Name the handler an operationId was likely renamed from: one of its tag's that no operation names now."""
    try:
        module = importlib.import_module(operation.module)
    except ModuleNotFoundError:
        return ""
    handlers = {
        name: f"{owner.__name__}.{name}"
        for owner in handler_classes(module)
        for name, value in vars(owner).items()
        if callable(value) and not name.startswith("_")
    }
    spec = yaml.safe_load((spec_dir / operation.document).read_text())
    named = {other.operation_id for other in spec_operations(operation.document, spec)}
    close = difflib.get_close_matches(operation.operation_id, [name for name in handlers if name not in named], n=1)
    if not close:
        return ""
    return (
        f"; or, if {close[0]!r} was renamed, rename its handler {operation.module}.{handlers[close[0]]} "
        f"to {operation.operation_id} (and every link naming it)"
    )


# Ids every eventId pattern takes, whatever else it refuses: how a pattern is told to be an eventId's.
EVENT_ID_SAMPLES = ("1795396666123-41", "0-0")


def _is_event_id_pattern(pattern: str) -> bool:
    try:
        compiled = re.compile(pattern)
    except re.error:
        return False  # the validators report a broken pattern
    return all(compiled.search(sample) for sample in EVENT_ID_SAMPLES) and compiled.search("not-an-id") is None


def check_event_id_patterns(spec_dir: Path) -> list[str]:
    """Report each eventId pattern of the documents that is not exactly the ids VORA reads."""
    problems = []
    for path in sorted(spec_dir.glob("*.yaml")):
        root = yaml.compose(path.read_text())
        if root is None:
            continue
        for tokens, node in _walk(root):
            if not tokens or tokens[-1] != "pattern" or not isinstance(node, yaml.ScalarNode):
                continue
            if _is_event_id_pattern(str(node.value)) and node.value != EVENT_ID_SCHEMA_PATTERN:
                problems.append(
                    f"{_line_of(path, root, tokens)}: {_pointer(tokens)}: an eventId pattern must take exactly "
                    "the ids VORA reads, each part at most 2^64-1 (vora.store.streams.EVENT_ID_SCHEMA_PATTERN), "
                    f"so that what it calls valid VORA takes: '{EVENT_ID_SCHEMA_PATTERN}'"
                )
    return problems


def check_all(spec_dir: Path, asyncapi_schema: Path | None = DEFAULT_ASYNCAPI_SCHEMA) -> list[str]:
    """Run every spec check and return the problems found."""
    unreadable = check_yaml(spec_dir)
    if unreadable:
        # The other checks would read these documents other than as written, or not at all.
        return unreadable
    return (
        check_openapi(spec_dir)
        + check_asyncapi(spec_dir, asyncapi_schema)
        + check_webhooks(spec_dir)
        + check_server_openapi(spec_dir)
        + check_console_openapi(spec_dir)
        + check_handlers(spec_dir)
        + check_error_responses(spec_dir)
        + check_event_id_patterns(spec_dir)
    )
