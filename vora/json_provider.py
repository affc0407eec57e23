"""Parse request JSON for both apps with one rule: nesting deeper than any VORA body is malformed, not a crash."""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider

# Deeper than any body either API takes (the deepest, a batch item's data, is 4 levels), far below
# the depth at which Python's parser, jsonschema or repr() would raise RecursionError.
MAX_JSON_DEPTH = 64


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Tell whether a parsed JSON value nests arrays and objects more than limit levels deep, without recursing."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class BoundedJSONProvider(DefaultJSONProvider):
    """Parse JSON so that nesting deeper than MAX_JSON_DEPTH is a parse error (a 400), never a RecursionError."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON, raising the ValueError of malformed JSON when it nests too deeply."""
        try:
            value = super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if isinstance(value, dict | list) and nested_deeper_than(value, MAX_JSON_DEPTH):
            raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        return value
