"""Tests of what a log line says of an exception."""

from __future__ import annotations

from vora.core.log_fields import error_fields


def test_error_fields_keep_a_long_message_on_one_short_line() -> None:
    """A multi-line or very long message is logged on one line of at most 200 characters and an ellipsis."""
    fields = error_fields(OSError("first line\n  second line " + "x" * 500))
    assert fields["error"] == "OSError"
    assert fields["detail"].startswith("first line second line xxx")
    assert len(fields["detail"]) == 201
    assert fields["detail"].endswith("\u2026")
