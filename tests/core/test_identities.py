"""Tests of the identity pattern the spec, the CLI and the publisher share."""

from __future__ import annotations

import re

import pytest

from vora.core.identities import IDENTITY_PATTERN, is_identity


@pytest.mark.parametrize("value", ["910111000", "34602128708", "admin.ops@example", "a", "9" * 64])
def test_accepts_phone_numbers_and_usernames(value: str) -> None:
    """Phone numbers and administrator usernames up to 64 characters are identities."""
    assert is_identity(value)


@pytest.mark.parametrize(
    "value", ["", "910111000\n", "910111000\r\n", "\n910111000", "9" * 65, "{slot}", "+", "91 01", "910\n111"]
)
def test_refuses_everything_else(value: str) -> None:
    """Empty, too long, braces, spaces and newlines anywhere, a trailing one included, are refused."""
    assert not is_identity(value)


def test_pattern_refuses_a_trailing_newline_under_re_search() -> None:
    """The spec's pattern itself refuses a trailing newline, as Connexion applies it (re.search)."""
    assert re.search(IDENTITY_PATTERN, "910111000")
    assert not re.search(IDENTITY_PATTERN, "910111000\n")
