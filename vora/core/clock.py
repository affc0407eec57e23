"""The one clock format VORA writes: RFC 3339 UTC with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_timestamp() -> str:
    """Return the current time as an RFC 3339 UTC timestamp with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
