"""Validate request bodies as Connexion does, with messages that name the rule and logs that hold no values."""

from __future__ import annotations

import logging
from typing import Any

from connexion.decorators.validation import RequestBodyValidator
from connexion.exceptions import BadRequestProblem
from connexion.utils import is_null
from jsonschema import ValidationError

log = logging.getLogger("vora.validation")

# Keywords whose own message is a dump of the whole instance: report their schema's description instead.
COMPOSITE_KEYWORDS = frozenset({"anyOf", "oneOf", "not"})


class RuleNamingBodyValidator(RequestBodyValidator):  # type: ignore[misc]
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
        except ValidationError as exc:
            where = ".".join(str(item) for item in exc.path)
            message = exc.message
            schema = exc.schema if isinstance(exc.schema, dict) else {}
            if exc.validator in COMPOSITE_KEYWORDS and schema.get("description"):
                message = str(schema["description"])
            log.info("request body refused", extra={"fields": {"rule": exc.validator, "at": where or "body"}})
            raise BadRequestProblem(detail=message + (f" - '{where}'" if where else "")) from None
        return None
