"""Hold the server API's bearer keys and compare an offered key with each in constant time."""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path

MIN_KEY_LENGTH = 32
# token68 (RFC 9110 §11.2): what fits in `Authorization: Bearer <key>` unquoted.
_KEY = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")
# How often a request may look at the key file for a rotation (a stat, not a read).
FILE_CHECK_SECONDS = 1.0


class KeyFileError(ValueError):
    """A configured server API key, or the file that holds them, cannot be used."""


def check_keys(source: str, keys: Iterable[str]) -> tuple[str, ...]:
    """Return the keys unchanged, or raise KeyFileError naming the source of a weak or malformed one."""
    checked = tuple(keys)
    for number, key in enumerate(checked, 1):
        if len(key) < MIN_KEY_LENGTH:
            raise KeyFileError(f"{source}: key {number} is shorter than {MIN_KEY_LENGTH} characters")
        if not _KEY.match(key):
            raise KeyFileError(f"{source}: key {number} has characters a bearer value cannot carry")
    return checked


def read_key_file(path: Path) -> tuple[str, ...]:
    """Read one key per line, skipping blank lines and # comments."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"VORA_SERVER_API_KEYS_FILE: cannot read {path}: {exc}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise KeyFileError(f"VORA_SERVER_API_KEYS_FILE: {path} holds no key")
    return check_keys(f"VORA_SERVER_API_KEYS_FILE ({path})", keys)


class ServerKeys:
    """Accept any configured key; keys from the file are re-read when the file changes."""

    def __init__(self, keys: Iterable[str], key_file: Path | None = None) -> None:
        self._fixed = tuple(k.encode() for k in keys)
        self._file = key_file
        self._lock = threading.Lock()
        self._from_file: tuple[bytes, ...] = ()
        self._file_stamp: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        if key_file is not None:
            self._reload_if_changed(force=True)

    def _reload_if_changed(self, force: bool = False) -> None:
        if self._file is None or (not force and time.monotonic() - self._checked_at < FILE_CHECK_SECONDS):
            return
        with self._lock:
            self._checked_at = time.monotonic()
            try:
                stat = self._file.stat()
            except OSError:
                return  # keep the keys last read: a file being replaced must not lock the backends out
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._file_stamp and not force:
                return
            try:
                self._from_file = tuple(k.encode() for k in read_key_file(self._file))
            except KeyFileError:
                if force:
                    raise
                return  # a half-written file keeps the previous keys until it is whole
            self._file_stamp = stamp

    def accepts(self, offered: str) -> bool:
        """Tell whether the offered key equals a configured one, comparing with every key."""
        self._reload_if_changed()
        candidate = offered.encode()
        matched = False
        for key in (*self._fixed, *self._from_file):
            # No early exit: the time taken does not tell which key, or how much of one, matched.
            matched |= hmac.compare_digest(candidate, key)
        return matched


def create_key_file(path: Path) -> bool:
    """Write a new random server API key to path (owner-only) unless the file exists; tell whether it wrote."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(f"# VORA server API keys, one a line (VORA_SERVER_API_KEYS_FILE)\n{secrets.token_urlsafe(32)}\n")
    return True
