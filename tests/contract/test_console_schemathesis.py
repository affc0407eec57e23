"""Run schemathesis against the console simulator of the real gunicorn server with a real token: zero findings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from testbed.vora_server import RunningServer, running_server
from tests.harness.schemathesis_runner import run_schemathesis
from tests.harness.tokens import TokenFactory
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.server_api.simulator import SIMULATOR_SPEC_FILE
from vora.store.directory import Directory

pytestmark = [pytest.mark.slow, pytest.mark.contract]


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path, redisdb: redis.Redis) -> Iterator[RunningServer]:
    """Serve VORA with the simulator on, one gevent worker on a loopback port."""
    with running_server({**env, "VORA_CONSOLE_SIMULATOR": "1"}, tmp_path) as running:
        yield running


def test_console_simulator_schemathesis_finds_nothing(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis, tmp_path: Path
) -> None:
    """Every check passes for every simulator operation, positive and negative data, for a user owning identities."""
    Directory(redisdb).add("qa", ["910111000", "0", "A"])
    token = make_token("qa")
    returncode, report = run_schemathesis(
        DEFAULT_SPEC_DIR / SIMULATOR_SPEC_FILE,
        f"{server.base_url}/console",
        f"Bearer {token}",
        tmp_path,
        max_examples=50,
        seed="20261206",
        workers=1,
    )
    assert returncode == 0, report[-6000:]
    assert "No issues found" in report or " passed" in report, report[-3000:]
    assert token not in server.log(), "the access token leaked into the server log"
