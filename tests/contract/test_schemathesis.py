"""Run schemathesis against the real gunicorn server with a valid token: zero findings allowed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from testbed.vora_server import RunningServer, running_server
from tests.harness.schemathesis_runner import run_schemathesis
from tests.harness.tokens import TokenFactory
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.store.directory import Directory

pytestmark = [pytest.mark.slow, pytest.mark.contract]


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path, redisdb: redis.Redis) -> Iterator[RunningServer]:
    """Serve VORA with two gevent workers on a loopback port, setup limits off (one user sets up hundreds of times)."""
    unlimited = {**env, "VORA_SETUP_RATE_PER_USER": "0", "VORA_SETUP_RATE_PER_IDENTITY": "0"}
    with running_server(unlimited, tmp_path, workers=2) as running:
        yield running


def test_schemathesis_finds_nothing(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis, tmp_path: Path
) -> None:
    """Every check passes for every operation, positive and negative data, and for the linked sequences."""
    Directory(redisdb).add("qa", ["910111000", "0", "A"])  # marked provisioned: a stranger's setup is 404, not 503
    token = make_token("qa")
    returncode, report = run_schemathesis(
        DEFAULT_SPEC_DIR / "vora.yaml", server.base_url, f"Bearer {token}", tmp_path, 300, "20261123"
    )
    assert returncode == 0, report[-6000:]
    assert "No issues found" in report or " passed" in report, report[-3000:]
    # The stateful phase ran the spec's links: identities -> setup -> eventSubscription / logout.
    assert re.search(r"✅ Stateful", report), report[-3000:]
    assert re.search(r"API Links:\s+4 covered / 4 selected / 4 total", report), report[-3000:]
    assert token not in server.log(), "the access token leaked into the server log"
