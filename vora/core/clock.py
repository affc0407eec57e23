"""The one clock VORA reads and the one format it writes: RFC 3339 UTC with milliseconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_timestamp() -> str:
    """Return the current time as an RFC 3339 UTC timestamp with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> int:
    """Return the wall clock in milliseconds since the epoch."""
    return int(time.time() * 1000)


def rfc3339_ms(epoch_ms: int) -> str:
    """Format milliseconds since the epoch as an RFC 3339 UTC timestamp with milliseconds."""
    when = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
