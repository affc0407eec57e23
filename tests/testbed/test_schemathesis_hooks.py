"""The schemathesis hooks make fuzz and the contract tests load: a request the tool mangled is not a finding."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from testbed.schemathesis_hooks import sent_path_is_valid
from testbed.vora_server import RunningServer, running_server
from tests.harness.schemathesis_runner import HOOKS_FILE
from tests.harness.server_api import SERVER_KEY
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.server_api.rules import SERVER_SPEC_FILE

pytestmark = [pytest.mark.slow, pytest.mark.contract, pytest.mark.server_api]

# The subject make fuzz generated at seed 770947809 (valid: printable ASCII but /), which schemathesis sent
# as Zg%EF%BF%BDz9%7C.
MANGLED_SUBJECT = "Zg%FFz9|"
USER_SCHEMA = {
    "type": "object",
    "properties": {"subject": {"type": "string", "pattern": "^[!-.0-~]{1,255}$"}},
    "required": ["subject"],
}


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path, redisdb: redis.Redis) -> Iterator[RunningServer]:
    """Serve VORA and its server API on loopback ports."""
    with running_server({**env, "VORA_SERVER_API_KEYS": SERVER_KEY}, tmp_path / "server") as running:
        yield running


def run_examples(
    document: Path, server: RunningServer, tmp_path: Path, hooks: bool
) -> subprocess.CompletedProcess[str]:
    """Run schemathesis' examples phase, every check, on setUserIdentities alone."""
    env = {k: v for k, v in os.environ.items() if k != "SCHEMATHESIS_HOOKS"}
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            *("run", str(document), "--url", server.server_api_url, "--checks", "all"),
            *("--phases", "examples", "--include-operation-id", "setUserIdentities", "--no-color"),
            *("--header", f"Authorization: Bearer {SERVER_KEY}", "--generation-database", "none"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**env, "SCHEMATHESIS_HOOKS": str(HOOKS_FILE)} if hooks else env,
    )


def test_a_valid_subject_schemathesis_mangles_is_not_reported(server: RunningServer, tmp_path: Path) -> None:
    """Sent as U+FFFD, the example subject Zg%FFz9| is rightly refused, and with the hooks that is no finding."""
    document = tmp_path / SERVER_SPEC_FILE
    text = (DEFAULT_SPEC_DIR / SERVER_SPEC_FILE).read_text()
    user_example = "      pattern: '^[!-.0-~]{1,255}$'\n      example: alice\n"
    assert user_example in text
    document.write_text(text.replace(user_example, user_example.replace("alice", f'"{MANGLED_SUBJECT}"')))

    without = run_examples(document, server, tmp_path, hooks=False)
    assert without.returncode == 1, without.stdout[-3000:]
    assert "Schema-valid request rejected" in without.stdout
    assert "Zg%EF%BF%BDz9%7C" in without.stdout  # the tool's doing: this is the request it names

    with_hooks = run_examples(document, server, tmp_path, hooks=True)
    assert with_hooks.returncode == 0, with_hooks.stdout[-3000:] + with_hooks.stderr[-2000:]
    assert "1 passed" in with_hooks.stdout


def test_a_path_is_judged_as_the_server_decodes_it() -> None:
    """What was sent counts, decoded: Zg%EF%BF%BDz9%7C is not a valid subject, Zg%25FFz9%7C and alice are."""
    assert not sent_path_is_valid(USER_SCHEMA, {"subject": "Zg%EF%BF%BDz9%7C"})
    assert not sent_path_is_valid(USER_SCHEMA, {"subject": "a%20b"})
    assert sent_path_is_valid(USER_SCHEMA, {"subject": "Zg%25FFz9%7C"})
    assert sent_path_is_valid(USER_SCHEMA, {"subject": "alice"})
