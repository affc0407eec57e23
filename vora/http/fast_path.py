"""Serve the well-formed requests of simple operations without Connexion's per-request chain.

Connexion 2 turns every request into a ConnexionRequest, runs five decorator layers (security,
URI parsing, body validation, produces, parameter introspection), then converts the answer back;
with Flask's request context around it, that is most of what a GET /identity or a server API
publishEvent costs. For an operation whose spec needs nothing else (one OAuth2 requirement or one
bearer requirement checked by a function the app bound, at most a JSON body and, where the app
allows them, string path parameters with a pattern), this layer does the same checks with the same
objects Connexion built at start-up: the operation's handler, its security function and required
scopes, its compiled body validator and its response mimetype. It answers only requests that pass
every check; anything else (no or bad credential, a missing scope, a query string, a path value
its pattern refuses, a body that is not valid JSON for the schema, an unexpected answer) goes to
the full Flask/Connexion stack untouched, which answers it exactly as before. An exception from
the handler is answered by the app's own error handlers inside a full request context. A fast
handler runs in an app context but no request context: it takes what it needs from the arguments
Connexion would pass it, never from flask.request.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from connexion.decorators.parameter import inspect_function_arguments
from connexion.utils import get_function_from_name, is_nullable
from flask import Flask, signals
from flask.json.provider import DefaultJSONProvider
from werkzeug.http import HTTP_STATUS_CODES

from vora.core.types import WsgiApp
from vora.http.bearer import bearer_token
from vora.http.hooks import ACTS_ONLY_ON, DONE_BY_FAST_PATH

log = logging.getLogger("vora.fast_path")

# What an operation's security check answers for a bearer credential: the token info, or None when it refuses.
CredentialCheck = Callable[[str], "dict[str, Any] | None"]

JSON_MIMETYPE = "application/json"
OPTIONAL_ARGUMENTS = frozenset({"token_info", "user"})
# The Draft 4 keywords whose meaning jsonschema (with Connexion's request extensions) and jsonschema_rs share
# exactly; Connexion's own (nullable, readOnly, writeOnly) are not among them, and format and the bounds are
# shared only as shared_meaning allows them.
SHARED_KEYWORDS = frozenset(
    {
        "type", "enum", "required", "properties", "additionalProperties", "allOf", "anyOf", "oneOf", "not",
        "items", "minItems", "maxItems", "minLength", "maxLength", "pattern", "minProperties", "maxProperties",
        "description", "title", "default", "example",
    }
)  # fmt: skip
# Both read these types alike in Draft 4 (1.0 and booleans are not integers, integers beyond 2^64 are), as
# tests/http/test_fast_path.py checks. Not number: NaN and the infinities, which Python's JSON parser makes, are
# numbers to jsonschema and of no type to jsonschema_rs, so a "not" of a number schema would accept them.
SHARED_TYPES = frozenset({"string", "boolean", "object", "array", "null", "integer"})
# The formats jsonschema_rs is handed the checker of, from the operation's own format checker: the very function
# Connexion's validator calls (rfc3339-validator's for date-time). Any other format keeps a body on jsonschema.
SHARED_FORMATS = frozenset({"date-time"})
# Draft 4's bounds, shared on an integer schema only: jsonschema_rs compares through floats, exact for an integer
# bound below 2^53 against any integer (rounding keeps the order of integers either side of one that floats
# hold), but not for a float bound or a larger one, nor against the infinities jsonschema compares.
BOUND_KEYWORDS = {"minimum": "exclusiveMinimum", "maximum": "exclusiveMaximum"}
EXACT_BOUND = 2**53
# The annotations of a path parameter's schema; a schema with anything else besides type and pattern is not fast.
PARAMETER_ANNOTATIONS = frozenset({"description", "example", "title"})
# Patterns of literal characters, classes, anchors, groups, lookaheads and \x/\n/\./\-/\+ escapes: Python's re and
# Rust's regex read them alike (no \d, \w, \s, \b, whose Unicode reach differs).
_PORTABLE_PATTERN = re.compile(r"(?:[^\\]|\\[xn.+\-])*")


@dataclass(frozen=True)
class PathParameter:
    """A string path parameter, checked as Connexion's parameter validator checks it: its pattern, searched."""

    name: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class FastOperation:
    """What one operation's fast path needs, read from Connexion's operation object at start-up."""

    operation_id: str
    handler: Callable[..., Any]
    credential: CredentialCheck  # the spec's security function for the operation, with its scopes checked
    arguments: frozenset[str]
    body_validator: Any  # the operation's compiled jsonschema validator; None: the operation takes no body
    mimetype: str
    body_is_valid: Callable[[Any], bool] | None = None  # validator's verdict, maybe from a faster twin of it
    path_parameters: tuple[PathParameter, ...] = ()


def shared_meaning(schema: Any, formats: Collection[str] = frozenset()) -> bool:
    """Tell whether a resolved body schema uses only keywords jsonschema and jsonschema_rs read alike.

    formats names the formats the twin is given jsonschema's own checker of; any other format is not shared.
    """
    if not isinstance(schema, dict):
        return False
    if not set(schema) <= SHARED_KEYWORDS | {"format", *BOUND_KEYWORDS, *BOUND_KEYWORDS.values()}:
        return False
    if "format" in schema and (not isinstance(schema["format"], str) or schema["format"] not in formats):
        return False
    if not _shared_bounds(schema) or not all(_exact_value(value) for value in schema.get("enum", [])):
        return False
    types = schema.get("type", "string")
    if not all(t in SHARED_TYPES for t in (types if isinstance(types, list) else [types])):
        return False
    pattern = schema.get("pattern", "")
    if not isinstance(pattern, str) or not _PORTABLE_PATTERN.fullmatch(pattern):
        return False
    children: list[Any] = list(schema.get("properties", {}).values())
    children += schema.get("allOf", []) + schema.get("anyOf", []) + schema.get("oneOf", [])
    children += [schema[key] for key in ("not", "items") if key in schema]
    if isinstance(schema.get("additionalProperties"), dict):
        children.append(schema["additionalProperties"])
    return all(shared_meaning(child, formats) for child in children)


def _shared_bounds(schema: dict[str, Any]) -> bool:
    """Tell whether a schema's bounds, if any, are integers below 2^53 on an integer, with boolean exclusives."""
    for bound, exclusive in BOUND_KEYWORDS.items():
        if exclusive in schema and (bound not in schema or type(schema[exclusive]) is not bool):
            return False
        if bound in schema:
            value = schema[bound]
            if schema.get("type") != "integer" or type(value) is not int or abs(value) >= EXACT_BOUND:
                return False
    return True


def _exact_value(value: Any) -> bool:
    """Tell whether jsonschema_rs compares an enum's value exactly: no float, no integer a float rounds to."""
    if isinstance(value, list):
        return all(_exact_value(item) for item in value)
    if isinstance(value, dict):
        return all(_exact_value(item) for item in value.values())
    return value is None or type(value) in (str, bool) or (type(value) is int and abs(value) < EXACT_BOUND)


def shared_formats(validator: Any) -> dict[str, Callable[[Any], bool]]:
    """Return the checks of the shared formats the validator's format checker has: its own, asked as it asks them."""
    checker = getattr(validator, "format_checker", None)
    if checker is None:
        return {}
    # FormatChecker.conforms runs the very check jsonschema's format keyword runs (the function, its exceptions).
    return {
        name: functools.partial(checker.conforms, format=name) for name in SHARED_FORMATS if name in checker.checkers
    }


def body_check(schema: dict[str, Any], validator: Any) -> Callable[[Any], bool]:
    """Return the operation validator's verdict on a body, from jsonschema_rs when both read the schema alike."""
    # Connexion resolves every $ref in place and keeps the spec's components beside them for any it could
    # not; shared_meaning refuses a $ref, so without one the components are never read.
    schema = {key: value for key, value in schema.items() if key != "components"}
    branches = discriminated_branches(schema)
    if branches is not None:
        name, by_value = branches
        checks = {value: body_check(branch, validator.evolve(schema=branch)) for value, branch in by_value.items()}
        return functools.partial(_check_branch, name, checks)
    formats = shared_formats(validator)
    if not shared_meaning(schema, formats):
        return validator.is_valid  # type: ignore[no-any-return] # jsonschema's validators are untyped here
    try:
        twin = jsonschema_rs.Draft4Validator(schema, formats=formats, validate_formats=True)
    except (ValueError, jsonschema_rs.ValidationError):
        return validator.is_valid  # type: ignore[no-any-return] # jsonschema's validators are untyped here
    return TwinCheck(twin)


# Keywords under which a stricter reading of a subschema can make the whole schema accept more: a Draft 4 twin of
# a later draft's schema with one of them could accept what the later draft refuses.
INVERTING_KEYWORDS = frozenset({"not", "oneOf"})
# Draft 4's boolean bounds are numbers from Draft 6 on.
LATER_DRAFT_BOUNDS = frozenset(BOUND_KEYWORDS.values())


def acceptance_check(schema: dict[str, Any], validator: Any) -> Callable[[Any], bool]:
    """Return a check of a Draft 7 schema that passes only what its validator accepts, from jsonschema_rs if it can.

    The twin reads the schema as Draft 4, where 1.0 is no integer: stricter than the later drafts and,
    with no keyword that inverts a subschema's verdict, never laxer. A caller must ask the validator
    itself about whatever the check refuses, as a refusal's words come from it anyway.
    """
    if _has_any_key(schema, INVERTING_KEYWORDS | LATER_DRAFT_BOUNDS):
        return validator.is_valid  # type: ignore[no-any-return] # jsonschema's validators are untyped here
    return body_check(schema, validator)


def _has_any_key(schema: Any, names: frozenset[str]) -> bool:
    """Tell whether a schema, or any schema or value inside it, has one of the keys."""
    if isinstance(schema, list):
        return any(_has_any_key(item, names) for item in schema)
    if not isinstance(schema, dict):
        return False
    return not names.isdisjoint(schema) or any(_has_any_key(value, names) for value in schema.values())


@dataclass(frozen=True)
class TwinCheck:
    """jsonschema_rs's verdict on a body, for a schema it reads as the operation's jsonschema validator does."""

    twin: Any  # jsonschema_rs.Draft4Validator

    def __call__(self, body: Any) -> bool:
        """Tell whether the body is valid; a body Rust cannot take, or a format check that raised: not valid."""
        try:
            return bool(self.twin.is_valid(body))
        except Exception:  # noqa: BLE001 - a lone surrogate, a raising format check: the full stack decides
            return False


def discriminated_branches(schema: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]] | None:
    """Return a oneOf's discriminator and its branch by each value, when the value alone decides the verdict.

    That holds when every branch is an object that requires the property and lists its values in an
    enum of strings, no value in two branches: a body can then match no branch but the one its value
    names, so the oneOf holds exactly when that branch does (and fails without a listed value).
    """
    if set(schema) - {"oneOf", "discriminator", *PARAMETER_ANNOTATIONS}:
        return None
    discriminator, branches = schema.get("discriminator"), schema.get("oneOf")
    if not isinstance(discriminator, dict) or not isinstance(branches, list) or not branches:
        return None
    name = discriminator.get("propertyName")
    if not isinstance(name, str):
        return None
    by_value: dict[str, dict[str, Any]] = {}
    for branch in branches:
        if not isinstance(branch, dict) or branch.get("type") != "object" or name not in branch.get("required", []):
            return None
        named = branch.get("properties", {}).get(name)
        if not isinstance(named, dict) or set(named) - {"type", "enum", *PARAMETER_ANNOTATIONS}:
            return None
        values = named.get("enum")
        if named.get("type", "string") != "string" or not isinstance(values, list) or not values:
            return None
        for value in values:
            if type(value) is not str or value in by_value:
                return None
            by_value[value] = branch
    return name, by_value


def _check_branch(name: str, checks: dict[str, Callable[[Any], bool]], body: Any) -> bool:
    """Check a body against the branch its discriminator value names; no such branch: not valid."""
    value = body.get(name) if type(body) is dict else None
    check = checks.get(value) if type(value) is str else None
    return check is not None and check(body)


def fast_operation(operation: Any, path_parameters: bool = False) -> FastOperation | None:
    """Derive an operation's fast path from Connexion's operation object, or None when the spec asks for more.

    With path_parameters, string path parameters with a pattern are checked here too; else an
    operation with any parameter is left to the full stack.
    """
    if operation.validate_responses or operation.get_mimetype() != JSON_MIMETYPE:
        return None
    parameters = _path_parameters(operation.parameters) if path_parameters else ()
    if parameters is None or (operation.parameters and not path_parameters):
        return None
    credential = _credential_check(operation)
    if credential is None:
        return None
    arguments, has_kwargs = inspect_function_arguments(operation._resolution.function)
    wanted = frozenset(arguments) - {parameter.name for parameter in parameters}
    validator = None
    if operation.body_schema:
        if operation.consumes != [JSON_MIMETYPE] or "x-body-name" in operation.request_body:
            return None
        # The very validator Connexion builds for the operation (vora.http.validation.RuleNamingBodyValidator).
        body_validator_class = operation.validator_map["body"]
        validator = body_validator_class(
            operation.body_schema,
            operation.consumes,
            operation.api,
            is_nullable(operation.body_definition),
            strict_validation=operation.strict_validation,
        ).validator
        wanted -= {"body"}
    elif operation.request_body:
        return None
    if has_kwargs or not wanted <= OPTIONAL_ARGUMENTS:
        return None
    if any(parameter.name not in arguments for parameter in parameters):
        return None
    # The spec's own operationId, as logs and metrics name it (Connexion's operation_id is the resolved handler).
    return FastOperation(
        operation._operation["operationId"],
        operation._resolution.function,
        credential,
        frozenset(arguments),
        validator,
        JSON_MIMETYPE,
        body_check(operation.body_schema, validator) if validator is not None else None,
        parameters,
    )


def _path_parameters(parameters: list[dict[str, Any]]) -> tuple[PathParameter, ...] | None:
    """Return an operation's parameters when each is a required string path parameter with a pattern, else None."""
    found = []
    for parameter in parameters:
        schema = parameter.get("schema", {})
        if parameter.get("in") != "path" or not parameter.get("required") or not isinstance(schema, dict):
            return None
        if schema.get("type") != "string" or not isinstance(schema.get("pattern"), str):
            return None
        if not set(schema) <= {"type", "pattern", *PARAMETER_ANNOTATIONS}:
            return None
        found.append(PathParameter(parameter["name"], re.compile(schema["pattern"])))
    return tuple(found)


def _credential_check(operation: Any) -> CredentialCheck | None:
    """Return the check of the operation's one security requirement, with the function the app bound; else None.

    OAuth2: the bound x-tokenInfoFunc, then the x-scopeValidateFunc the spec names on the token's
    scopes (as Connexion's check_oauth_func). HTTP bearer without scopes: the bound x-bearerInfoFunc.
    """
    security = operation.security
    if len(security) != 1 or len(security[0]) != 1:
        return None
    ((name, scopes),) = security[0].items()
    scheme = operation.security_schemes.get(name, {})
    bound: dict[str, Callable[..., Any]] = dict(getattr(operation.api, "security_functions", {}))
    kind = scheme.get("type")
    if kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer" and not scopes:
        return bound.get(scheme.get("x-bearerInfoFunc", ""))
    if kind != "oauth2" or "x-scopeValidateFunc" not in scheme:
        return None
    token_info = bound.get(scheme.get("x-tokenInfoFunc", ""))
    if token_info is None:
        return None
    validate_scope = get_function_from_name(scheme["x-scopeValidateFunc"])
    required = list(scopes)

    def check(token: str) -> dict[str, Any] | None:
        info: dict[str, Any] | None = token_info(token)
        if info is None:
            return None
        return info if validate_scope(required, info.get("scope", info.get("scopes", ""))) else None

    return check


def skippable_hooks(app: Flask, covered: Callable[[str], bool]) -> bool:
    """Tell whether every request hook of the app may be skipped for requests to the paths covered says are fast."""
    hooks: list[Any] = []
    for registry in (app.before_request_funcs, app.teardown_request_funcs):
        for funcs in registry.values():
            hooks += funcs
    for hook in hooks:
        if getattr(hook, DONE_BY_FAST_PATH, False):
            continue
        only_on = getattr(hook, ACTS_ONLY_ON, None)
        if only_on is not None and not covered(only_on):
            continue
        return False
    later = (app.after_request_funcs, app.url_value_preprocessors)
    return not any(funcs for registry in later for funcs in registry.values()) and not app.teardown_appcontext_funcs


def json_encoder_of(app: Flask) -> Callable[[Any], str]:
    """Return the app's JSON serializer: one encoder built once when the provider is Flask's default one."""
    provider = app.json
    if isinstance(provider, DefaultJSONProvider) and type(provider).dumps is DefaultJSONProvider.dumps:
        # What DefaultJSONProvider.dumps has json.dumps build anew for every call.
        encoder = json.JSONEncoder(
            default=provider.default, ensure_ascii=provider.ensure_ascii, sort_keys=provider.sort_keys
        )
        return encoder.encode
    return provider.dumps


def path_template(full_path: str, parameters: tuple[PathParameter, ...]) -> re.Pattern[str] | None:
    """Compile a spec path with {name} parameters into the regex of Werkzeug's string converter, or None without any."""
    if not parameters:
        return None
    parts = re.split(r"\{(\w+)\}", full_path)
    regex = "".join(re.escape(part) if n % 2 == 0 else f"(?P<{part}>[^/]+)" for n, part in enumerate(parts))
    return re.compile(regex)


class FastPath:
    """Answer the well-formed requests of the fast operations; hand every other request to the app."""

    def __init__(
        self,
        app: Flask,
        routes: dict[tuple[str, str], FastOperation],
        fallback: WsgiApp,
        get_response: Callable[[Any, str], Any],
    ) -> None:
        self._app = app
        self._routes = {key: op for key, op in routes.items() if not op.path_parameters}
        # Templated routes, tried in turn after the exact ones: (METHOD, path regex, operation).
        self._templated = [
            (method, template, op)
            for (method, path), op in routes.items()
            if (template := path_template(path, op.path_parameters)) is not None
        ]
        self._fallback = fallback
        self._get_response = get_response  # Connexion's conversion, for answers other than (JSON, status[, headers])
        self._max_body = app.config["MAX_CONTENT_LENGTH"]
        self._encode = json_encoder_of(app)
        # The status lines Werkzeug writes, for the codes that carry a body.
        self._statuses = {
            code: f"{code} {phrase.upper()}"
            for code, phrase in HTTP_STATUS_CODES.items()
            if code >= 200 and code not in (204, 304)
        }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Serve one request."""
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        operation = self._routes.get((method, path))
        values: dict[str, str] = {}
        if operation is None and self._templated:
            operation, values = self._match(method, path)
        if operation is None or environ.get("QUERY_STRING") or self._signalled():
            return self._fallback(environ, start_response)
        token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        if token is None:
            return self._fallback(environ, start_response)
        body = None
        if operation.body_is_valid is not None:
            body = self._body_of(environ)
            if body is None:
                return self._fallback(environ, start_response)
        app_context = self._app.app_context()
        app_context.push()
        try:
            return self._serve(operation, token, body, values, environ, start_response)
        finally:
            app_context.pop()

    def _match(self, method: str, path: str) -> tuple[FastOperation | None, dict[str, str]]:
        """Find the templated operation of a path whose every value its parameter's pattern accepts."""
        for wanted, template, operation in self._templated:
            match = template.fullmatch(path) if wanted == method else None
            if match is None:
                continue
            values = match.groupdict()
            # ASCII only: Werkzeug hands the handler the path re-decoded as UTF-8, which ASCII is unchanged by.
            for parameter in operation.path_parameters:
                value = values[parameter.name]
                if not value.isascii() or parameter.pattern.search(value) is None:
                    return None, {}
            return operation, values
        return None, {}

    @staticmethod
    def _signalled() -> bool:
        """Tell whether anything listens to Flask's request signals, which only the full stack sends."""
        return bool(signals.request_started.receivers or signals.request_finished.receivers)

    def _body_of(self, environ: dict[str, Any]) -> bytes | None:
        """Read a JSON body the app would accept, putting it back for the app; None when it is not one."""
        length = environ.get("CONTENT_LENGTH") or ""
        content_type = environ.get("CONTENT_TYPE", "")
        if not length.isdigit() or int(length) > self._max_body:
            return None
        if content_type.partition(";")[0].strip() != JSON_MIMETYPE:
            return None
        raw: bytes = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(raw)
        return raw

    def _serve(
        self,
        operation: FastOperation,
        token: str,
        raw: bytes | None,
        values: dict[str, str],
        environ: dict[str, Any],
        start_response: Callable[..., Any],
    ) -> Iterable[bytes]:
        kwargs: dict[str, Any] = dict(values)
        try:
            info = operation.credential(token)
        except Exception:  # noqa: BLE001 - the full stack answers every refusal, exactly as before
            return self._fallback(environ, start_response)
        if info is None:
            return self._fallback(environ, start_response)
        if raw is not None:
            try:
                body = self._app.json.loads(raw)
            except ValueError:
                return self._fallback(environ, start_response)
            if body is None or operation.body_is_valid is None or not operation.body_is_valid(body):
                return self._fallback(environ, start_response)
            kwargs["body"] = body
        if "token_info" in operation.arguments:
            kwargs["token_info"] = info
        if "user" in operation.arguments:
            kwargs["user"] = info.get("sub", info.get("uid"))
        environ["vora.operation"] = operation.operation_id
        try:
            answer = operation.handler(**kwargs)
            sent = self._json_answer(answer, operation.mimetype, start_response)
            if sent is not None:
                return sent
            response = self._get_response(answer, operation.mimetype)
        except Exception as exc:  # noqa: BLE001 - answered by the app's own error handlers, as Flask would
            return self._answer_error(exc, environ, start_response)
        result: Iterable[bytes] = response(environ, start_response)
        return result

    def _json_answer(self, answer: Any, mimetype: str, start_response: Callable[..., Any]) -> list[bytes] | None:
        """Answer a handler's (JSON, status[, headers]) with the bytes and headers Werkzeug would send; else None."""
        if type(answer) is not tuple or len(answer) not in (2, 3) or type(answer[1]) is not int:
            return None
        data, code = answer[0], answer[1]
        extra: dict[str, str] = answer[2] if len(answer) == 3 else {}
        status = self._statuses.get(code)
        if status is None or (type(data) is not dict and type(data) is not list) or type(extra) is not dict:
            return None
        # Connexion's Jsonifier(flask.json): the app's JSON provider, and a newline.
        payload = (self._encode(data) + "\n").encode()
        headers = [("Content-Type", mimetype), ("Content-Length", str(len(payload)))]
        headers += extra.items()
        start_response(status, headers)
        return [payload]

    def _answer_error(
        self, exc: Exception, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Answer a handler's exception with the app's error handlers in a full request context."""
        with self._app.request_context(environ):
            try:
                response = self._app.finalize_request(self._app.handle_user_exception(exc))
            except Exception as unhandled:  # noqa: BLE001 - as Flask.wsgi_app does
                response = self._app.handle_exception(unhandled)
            result: Iterable[bytes] = response(environ, start_response)
            return result


def routes_of(
    app: Flask, base_path: str, operations: Iterator[tuple[str, str, Any]], path_parameters: bool = False
) -> dict[tuple[str, str], FastOperation]:
    """Return the fast operations by (METHOD, full spec path), for the operations whose spec allows it.

    With path_parameters, operations with string path parameters are fast too (the path keeps its {name}).
    """
    routes = {}
    for method, path, operation in operations:
        if "{" in path and not path_parameters:
            continue
        fast = fast_operation(operation, path_parameters)
        if fast is not None:
            routes[(method.upper(), base_path + path)] = fast
    templates = [path_template(path, op.path_parameters) for (_, path), op in routes.items()]

    def covered(path: str) -> bool:
        exact = any(key[1] == path for key in routes)
        return exact or any(template is not None and template.fullmatch(path) for template in templates)

    if not skippable_hooks(app, covered):
        log.warning("fast path off: the app has request hooks it does not know to be inert")
        return {}
    return routes
