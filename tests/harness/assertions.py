"""Assertions several test packages share."""

from __future__ import annotations

import pytest


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Check that nothing was logged with a traceback (an unhandled error)."""
    tracebacks = [record.getMessage() for record in caplog.records if record.exc_info]
    assert not tracebacks, tracebacks
