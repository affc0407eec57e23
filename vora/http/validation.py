"""Validate request bodies as Connexion does, with messages that name the rule and logs that hold no values."""

from __future__ import annotations

import logging
from typing import Any

from connexion.decorators.validation import RequestBodyValidator
from connexion.exceptions import BadRequestProblem
from connexion.utils import is_null
from jsonschema import ValidationError
from jsonschema.exceptions import best_match

log = logging.getLogger("vora.validation")

# Keywords whose own message is a dump of the whole instance: report their schema's description instead.
COMPOSITE_KEYWORDS = frozenset({"anyOf", "oneOf", "not"})


class RuleNamingBodyValidator(RequestBodyValidator):  # type: ignore[misc] # connexion is untyped
    """Refuse an invalid body with a 400 whose message names the broken rule, never logging the body's values.

    Connexion's own validator reports a failed anyOf as a dump of the whole body (a device token
    included) and logs jsonschema's message, which can quote what the client sent.
    """

    def validate_schema(self, data: Any, url: str) -> None:
        """Raise BadRequestProblem when data breaks the operation's body schema."""
        if self.is_null_value_valid and is_null(data):
            return None
        try:
            self.validator.validate(data)
        except ValidationError as refused:
            exc = discriminated(self.validator, refused)
            where = ".".join(str(item) for item in exc.path)
            message = exc.message
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
    if error.validator != "oneOf" or not discriminator or not isinstance(error.instance, dict):
        return error
    name = discriminator["propertyName"]
    value = error.instance.get(name)
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
