"""Tests of the server API keys: constant-time matching against every key, and rotation through the key file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vora.core import server_keys
from vora.core.server_keys import KeyFileError, ServerKeys, read_key_file

CURRENT = "current-key-0123456789abcdefghijklmnop"
NEXT = "next-key-0123456789abcdefghijklmnopqrstu"


def test_any_configured_key_matches_and_nothing_else() -> None:
    """Each configured key is accepted; a prefix, an extension or another value is not."""
    keys = ServerKeys([CURRENT, NEXT])
    assert keys.accepts(CURRENT)
    assert keys.accepts(NEXT)
    for wrong in (CURRENT[:-1], CURRENT + "x", "", "é" * 40):
        assert not keys.accepts(wrong)


def test_no_key_accepts_nothing() -> None:
    """With no key configured every value is refused."""
    assert not ServerKeys([]).accepts("")


def test_key_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    """One key a line; blank lines and # comments are ignored; an empty file is an error."""
    path = tmp_path / "keys"
    path.write_text(f"# rotated 2026-12-01\n{CURRENT}\n\n  {NEXT}  \n")
    assert read_key_file(path) == (CURRENT, NEXT)
    path.write_text("# nothing yet\n")
    with pytest.raises(KeyFileError, match="holds no key"):
        read_key_file(path)


def test_rotation_through_the_file_needs_no_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding the next key and then removing the old one take effect on the next request."""
    monkeypatch.setattr(server_keys, "FILE_CHECK_SECONDS", 0.0)
    path = tmp_path / "keys"
    path.write_text(CURRENT + "\n")
    keys = ServerKeys([], path)
    assert keys.accepts(CURRENT)
    assert not keys.accepts(NEXT)
    path.write_text(f"{CURRENT}\n{NEXT}\n")
    assert keys.accepts(NEXT)
    path.write_text(NEXT + "\n")
    os.utime(path, ns=(1, 1))  # a different stamp even within the file system's time resolution
    assert not keys.accepts(CURRENT)
    assert keys.accepts(NEXT)


def test_a_broken_or_missing_file_keeps_the_last_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A half-written or removed key file does not lock the telephony side out."""
    monkeypatch.setattr(server_keys, "FILE_CHECK_SECONDS", 0.0)
    path = tmp_path / "keys"
    path.write_text(CURRENT + "\n")
    keys = ServerKeys([], path)
    path.write_text("too-short\n")
    assert keys.accepts(CURRENT)
    path.unlink()
    assert keys.accepts(CURRENT)


def test_a_bad_file_at_start_is_an_error(tmp_path: Path) -> None:
    """A key file that is unreadable or holds a weak key fails at start, naming the file."""
    path = tmp_path / "keys"
    path.write_text("weak\n")
    with pytest.raises(KeyFileError, match="shorter than 32"):
        ServerKeys([], path)
