"""Run schemathesis against the real gunicorn server with a valid token: zero findings allowed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import TokenFactory
from tests.server import RunningServer, running_server
from vora.settings import DEFAULT_SPEC_DIR

pytestmark = [pytest.mark.slow, pytest.mark.contract]


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path, redisdb: redis.Redis) -> Iterator[RunningServer]:
    """Serve VORA with two gevent workers on a loopback port."""
    with running_server(env, tmp_path, workers=2) as running:
        yield running


def test_schemathesis_finds_nothing(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis, tmp_path: Path
) -> None:
    """Every check schemathesis has passes for every operation, positive and negative data."""
    from vora.store import keys

    redisdb.sadd(keys.user_identities("qa"), "910111000", "0", "A")
    token = make_token("qa")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            str(DEFAULT_SPEC_DIR / "vora.yaml"),
            "--url",
            server.base_url,
            "--checks",
            "all",
            "--mode",
            "all",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "300",
            "--generation-database",
            "none",
            "--seed",
            "20261123",
            "--workers",
            "2",
            "--max-response-time",
            "5",
            "--request-timeout",
            "5",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        cwd=tmp_path,
    )
    report = result.stdout + result.stderr
    print(report)
    assert result.returncode == 0, report[-6000:]
    assert "No issues found" in report or " passed" in report, report[-3000:]
    assert token not in server.log(), "the access token leaked into the server log"
