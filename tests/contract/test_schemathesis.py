"""Run schemathesis against the real gunicorn server with a valid token: zero findings allowed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import TokenFactory
from tests.contract.runner import run_schemathesis
from tests.harness.vora_server import RunningServer, running_server
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
    """Every check passes for every operation, positive and negative data, and for the linked sequences."""
    from vora.store.directory import Directory

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
