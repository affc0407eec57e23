"""The dev authorization server refuses configurations that would make it unsafe or useless."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.harness.devauth import DEVAUTH_DIR, node_binary, write_signing_key

pytestmark = [pytest.mark.oauth]


def run_devauth(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run devauth/server.js with these variables and return how it ended (it must end at once)."""
    return subprocess.run(
        [node_binary(), str(DEVAUTH_DIR / "server.js")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    """DEVAUTH_HOST must be a loopback address: the dev server never listens beyond this machine."""
    jwks = tmp_path / "jwks.json"
    write_signing_key(jwks)
    result = run_devauth({"DEVAUTH_HOST": "0.0.0.0", "DEVAUTH_JWKS_FILE": str(jwks)})
    assert result.returncode == 2
    assert "loopback" in result.stderr


def test_refuses_to_start_without_its_signing_keys(tmp_path: Path) -> None:
    """A missing JWKS file stops the server at start, naming the file."""
    result = run_devauth({"DEVAUTH_JWKS_FILE": str(tmp_path / "absent.json")})
    assert result.returncode == 2
    assert "absent.json" in result.stderr


def test_new_signing_key_replaces_the_old_one(tmp_path: Path) -> None:
    """keys.js writes a key set of one new private ES256 key, so rotating removes the old key."""
    jwks = tmp_path / "jwks.json"
    first = write_signing_key(jwks)
    second = write_signing_key(jwks)
    assert first != second
    assert f'"kid":"{second}"' in jwks.read_text()
    assert first not in jwks.read_text()
    assert '"d":' in jwks.read_text()
    assert jwks.stat().st_mode & 0o077 == 0
