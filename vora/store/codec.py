"""Turn what redis-py returns (bytes, or str with decode_responses) into text."""

from __future__ import annotations


def text(value: object) -> str:
    """Decode a Redis reply value as UTF-8 text; None becomes the empty string."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
