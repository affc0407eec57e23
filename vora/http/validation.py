"""Validate request bodies as Connexion does, with messages that name the rule and logs that hold no values."""

from __future__ import annotations

import logging
from typing import Any

from connexion.decorators.validation import ParameterValidator, RequestBodyValidator
from connexion.exceptions import BadRequestProblem
from connexion.utils import is_null
from jsonschema import ValidationError
from jsonschema.exceptions import best_match

from vora.core.error_shape import clip, clip_echoes

log = logging.getLogger("vora.validation")

# Keywords whose own message is a dump of the whole instance: report their schema's description instead.
COMPOSITE_KEYWORDS = frozenset({"anyOf", "oneOf", "not"})
# The longest rule message an answer carries: room for an enum the schema lists, not for what a client sent.
MAX_RULE_MESSAGE = 1024
# How many unexpected property names a message repeats.
NAMED_EXTRAS = 5


def rule_message(error: ValidationError) -> str:
    """Say which rule a value broke without repeating it: an array or object by its size, anything else clipped."""
    message = error.message
    instance = error.instance
    if isinstance(instance, list | dict):
        shown = repr(instance)  # what jsonschema began its message with; bodies are nested 64 deep at most
        size = len(instance)
        kind = f"an array of {size} items" if isinstance(instance, list) else f"an object of {size} properties"
        if message.startswith(shown):
            message = kind + message[len(shown) :]
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extras = [name for name in instance if name not in allowed]
        if len(extras) > NAMED_EXTRAS:
            named = ", ".join(repr(clip(str(name))) for name in extras[:NAMED_EXTRAS])
            message = f"Additional properties are not allowed ({len(extras)} unexpected, among them {named})"
    bound = {"max": "at most", "min": "at least"}.get(str(error.validator)[:3])
    if bound and str(error.validator)[3:] in {"Items", "Length", "Properties"}:
        message += f" ({bound} {error.validator_value})"
    message = clip_echoes(message)
    return message if len(message) <= MAX_RULE_MESSAGE else message[:MAX_RULE_MESSAGE] + "\u2026"


class RuleNamingBodyValidator(RequestBodyValidator):  # type: ignore[misc] # connexion is untyped
    """Refuse an invalid body with a 400 whose message names the broken rule, never logging the body's values.

    Connexion's own validator reports a failed anyOf as a dump of the whole body (a device token
    included) and logs jsonschema's message, which can quote what the client sent.
    """

    def validate_schema(self, data: Any, url: str) -> None:
        """Raise BadRequestProblem when data breaks the operation's body schema."""
        if self.is_null_value_valid and is_null(data):
            return None
        if data is None:  # no body at all (Connexion reads an empty one as None): say so, not "None is not ..."
            schema = self.schema if isinstance(self.schema, dict) else {}
            # A discriminated oneOf is of objects (OpenAPI's discriminator applies to nothing else).
            wanted = schema.get("type") or ("object" if schema.get("discriminator") else "value")
            raise BadRequestProblem(detail=f"The request body is empty: send a JSON {wanted}")
        try:
            self.validator.validate(data)
        except ValidationError as refused:
            exc = discriminated(self.validator, refused)
            where = ".".join(str(item) for item in exc.path)
            message = rule_message(exc)
            schema = exc.schema if isinstance(exc.schema, dict) else {}
            if exc.validator in COMPOSITE_KEYWORDS and schema.get("description"):
                message = str(schema["description"])
            log.info("request body refused", extra={"fields": {"rule": exc.validator, "at": where or "body"}})
            raise BadRequestProblem(detail=message + (f" - '{where}'" if where else "")) from None
        return None


def discriminated(validator: Any, error: ValidationError) -> ValidationError:
    """Descend from a failed oneOf into the branch its discriminator names, for the error that says what is wrong.

    A oneOf with a `discriminator` (spec/vora-server.yaml's PublishRequest) picks its branch by one
    property's value: the branch whose enum for that property holds it. An unknown value is itself the error.
    """
    schema = error.schema if isinstance(error.schema, dict) else {}
    discriminator = schema.get("discriminator")
    if error.validator != "oneOf" or not discriminator:
        return error
    if not isinstance(error.instance, dict):  # every branch takes an object: what was sent is not one
        message = f"{error.instance!r} is not of type 'object'"
        return ValidationError(message, path=error.path, validator="type", instance=error.instance)
    name = discriminator["propertyName"]
    if name not in error.instance:
        return ValidationError(f"{name!r} is a required property", path=error.path, validator="required")
    value = error.instance[name]
    allowed: list[Any] = []
    branches: list[dict[str, Any]] = schema.get("oneOf", [])
    for branch in branches:
        enum = branch.get("properties", {}).get(name, {}).get("enum", [])
        allowed += enum
        if value in enum:
            inner = best_match(validator.evolve(schema=branch).iter_errors(error.instance))
            if inner is not None:
                inner.path.extendleft(reversed(error.path))
                return discriminated(validator, inner)
    return ValidationError(f"{value!r} is not one of {allowed}", path=[*error.path, name], validator="enum")


def naming(name: str, error: str | None) -> str | None:
    """Put the parameter's name in front of a refusal that does not say it (jsonschema's never does)."""
    if not error or f"'{name}'" in error:
        return error
    return f"{name}: {error}"


class NamingParameterValidator(ParameterValidator):  # type: ignore[misc] # connexion is untyped
    """Refuse a bad query or header parameter with a message that names it, as a body's or a path's refusal does.

    Connexion's message for a value its schema refuses is jsonschema's alone ("0 is less than the
    minimum of 1"), which does not say which parameter it was.
    """

    def validate_query_parameter(self, param: dict[str, Any], request: Any) -> str | None:
        """Return why a query parameter is refused, naming it, or None."""
        return naming(str(param["name"]), super().validate_query_parameter(param, request))

    def validate_header_parameter(self, param: dict[str, Any], request: Any) -> str | None:
        """Return why a header parameter is refused, naming it, or None."""
        return naming(str(param["name"]), super().validate_header_parameter(param, request))
