"""Tests of the `vora` command line against a real Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from tests.harness import free_port
from tests.harness.tokens import AUDIENCE, ISSUER
from vora.app import create_app
from vora.auth.tokens import KeySet, TokenVerifier, public_jwk_from_pem
from vora.cli import main
from vora.core.server_keys import read_key_file
from vora.core.settings import Settings
from vora.services import services_of
from vora.sessions.ownership import DirectoryState, Ownership
from vora.store import keys
from vora.store.directory import Directory
from vora.store.sessions import SessionStore


@pytest.fixture
def runner(settings: Settings, redisdb: redis.Redis) -> CliRunner:
    """Run CLI commands with the test settings in the environment."""
    return CliRunner(
        env={
            "VORA_REDIS_URL": settings.redis_url,
            "VORA_DEV_KEY": str(settings.dev_key),
            "VORA_OAUTH_ISSUER": ISSUER,
            "VORA_OAUTH_AUDIENCE": AUDIENCE,
        }
    )


def test_identities_add_list_remove(runner: CliRunner, redisdb: redis.Redis) -> None:
    """Identities are provisioned, listed sorted, and removed."""
    added = runner.invoke(main, ["identities", "add", "alice", "942788701", "602128708"])
    assert added.exit_code == 0, added.output
    assert "2 added" in added.output
    listed = runner.invoke(main, ["identities", "list", "alice"])
    assert listed.output.split() == ["602128708", "942788701"]
    removed = runner.invoke(main, ["identities", "remove", "alice", "942788701"])
    assert removed.exit_code == 0
    assert redisdb.smembers(keys.user_identities("alice")) == {b"602128708"}


def test_identities_remove_ends_sessions(runner: CliRunner, settings: Settings, redisdb: redis.Redis) -> None:
    """Removing an identity ends the user's sessions on it with reason revoked."""
    app = create_app(settings)
    state = services_of(app)
    state.directory.add("alice", ["910111000"])
    opened = state.sessions.open("alice", "910111000", "WebSocket", False, ["scope.vora.identities"])
    state.sessions.admit_socket(opened.websocket_token, None, int(time.time() * 1000))  # only then a tombstone
    result = runner.invoke(main, ["identities", "remove", "alice", "910111000"])
    assert "1 session(s) ended" in result.output
    assert state.session_store.ended_reason("910111000", opened.session_id) == "revoked"


def test_identities_refuses_bad_identity(runner: CliRunner, redisdb: redis.Redis) -> None:
    """An identity with characters outside the spec's pattern is refused and nothing is written."""
    result = runner.invoke(main, ["identities", "add", "alice", "{slot}"])
    assert result.exit_code != 0
    assert "not an identity" in result.output
    assert redisdb.exists(keys.user_identities("alice")) == 0


def test_token_verifies_against_the_dev_key(runner: CliRunner, settings: Settings) -> None:
    """`vora token` prints a token the server's verifier accepts, with the asked scopes."""
    result = runner.invoke(main, ["token", "--sub", "carol", "--scope", "scope.vora.identities"])
    assert result.exit_code == 0, result.output
    assert settings.dev_key is not None
    verifier = TokenVerifier(KeySet("", [public_jwk_from_pem(settings.dev_key.read_bytes())]), ISSUER, AUDIENCE, 0)
    principal = verifier.verify(result.output.strip())
    assert principal.subject == "carol"
    assert principal.scopes == {"scope.vora.identities"}


def test_token_without_key_explains(tmp_path: Path) -> None:
    """Without a dev key, `vora token` says how to get one."""
    result = CliRunner(env={"VORA_DEV_KEY": str(tmp_path / "missing.pem")}).invoke(main, ["token"])
    assert result.exit_code != 0
    assert "make run" in result.output


def test_dev_key_is_created_once(tmp_path: Path) -> None:
    """`vora dev-key` creates a private key with mode 600 and keeps it on a second run."""
    path = tmp_path / "k" / "dev.pem"
    first = CliRunner().invoke(main, ["dev-key", str(path)])
    content = path.read_bytes()
    second = CliRunner().invoke(main, ["dev-key", str(path)])
    assert "created" in first.output
    assert "kept" in second.output
    assert path.read_bytes() == content
    assert path.stat().st_mode & 0o777 == 0o600


def test_check_spec_passes() -> None:
    """`vora check-spec` succeeds on the committed spec."""
    result = CliRunner().invoke(main, ["check-spec"])
    assert result.exit_code == 0, result.output
    assert "spec OK" in result.output


def test_bad_setting_is_a_clear_error() -> None:
    """A bad VORA_* value stops the CLI with the variable's name."""
    result = CliRunner(env={"VORA_SESSION_TTL": "soon"}).invoke(main, ["identities", "list", "x"])
    assert result.exit_code != 0
    assert "VORA_SESSION_TTL" in result.output


def test_server_key_creates_a_private_key_file_once(runner: CliRunner, tmp_path: Path) -> None:
    """`vora server-key` writes one strong key to an owner-only file VORA accepts, and keeps it on a second run."""
    path = tmp_path / "server-api.key"
    assert "created" in runner.invoke(main, ["server-key", str(path)]).output
    first = read_key_file(path)
    assert len(first) == 1
    assert path.stat().st_mode & 0o077 == 0
    assert "kept" in runner.invoke(main, ["server-key", str(path)]).output
    assert read_key_file(path) == first


def test_events_publish_unconfirmed_by_replicas_exits_3_and_prints_the_event(
    runner: CliRunner, redisdb: redis.Redis
) -> None:
    """Asked for a replica that Redis does not have, publish prints the stored event and exits with status 3."""
    result = runner.invoke(
        main,
        ["events", "publish", "942788701", "presence", "--data", '{"status": "busy"}'],
        env={"VORA_PUBLISH_MIN_REPLICAS": "1", "VORA_PUBLISH_REPLICA_TIMEOUT": "50"},
    )
    assert result.exit_code == 3, result.output
    printed = json.loads(result.stdout.splitlines()[0])
    assert printed["replicated"] is False
    assert "0 of the 1 replicas" in result.output
    stored = redisdb.xrange(keys.event_stream("942788701"))
    assert [entry_id.decode() for entry_id, _ in stored] == [printed["eventId"]]  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any


@pytest.mark.parametrize(
    "argv",
    [
        ["identities", "add", "alice", "602128708\n"],
        ["identities", "remove", "alice", "602128708\n"],
        ["events", "publish", "602128708\n", "presence", "--data", '{"status": "busy"}'],
    ],
)
def test_identity_with_a_trailing_newline_is_refused(runner: CliRunner, redisdb: redis.Redis, argv: list[str]) -> None:
    """An identity ending in a newline is refused and no key is written."""
    result = runner.invoke(main, argv)
    assert result.exit_code != 0
    assert "identity" in result.output
    assert redisdb.dbsize() == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["identities", "add", "alice", "602128708"],
        ["identities", "remove", "alice", "602128708"],
        ["identities", "list", "alice"],
        ["events", "publish", "602128708", "presence", "--data", '{"status": "busy"}'],
    ],
)
def test_redis_down_is_one_error_line(argv: list[str]) -> None:
    """With nothing listening at VORA_REDIS_URL, each Redis command prints one `Error:` line and exits 1."""
    env = {"VORA_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "VORA_REDIS_TIMEOUT": "0.5"}
    result = CliRunner(env=env).invoke(main, argv)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: Redis failed: ConnectionError")
    assert not isinstance(result.exception, redis.RedisError)


def test_config_prints_the_values_in_effect_as_written(runner: CliRunner, tmp_path: Path) -> None:
    """`vora config` shows each variable as it would be set, marks its source, and masks secrets and passwords."""
    key_file = tmp_path / "server-api.key"
    key_file.write_text("srv-config-key-0123456789abcdefghijklmnopqrstu\n")
    shown = runner.invoke(
        main,
        ["config"],
        env={
            "VORA_REDIS_BATCHING": "no",
            "VORA_CONSOLE_SIMULATOR": "1",
            "VORA_CORS_ORIGINS": "https://a.example, https://b.example",
            "VORA_SERVER_API_KEYS": "srv-config-key-abcdefghijklmnopqrstuvwxyz0123456789",
            "VORA_SERVER_API_KEYS_FILE": str(key_file),
            "VORA_REDIS_URL": "redis://:hunter2-secret@127.0.0.1:6390/3",
        },
    )
    assert shown.exit_code == 0, shown.output
    lines = dict(line.split("=", 1) for line in shown.output.splitlines())
    assert lines["VORA_REDIS_BATCHING"] == "off  # environment"
    assert lines["VORA_CORS_ORIGINS"] == "https://a.example,https://b.example  # environment"
    assert lines["VORA_SESSION_TTL"] == "3600  # default"
    assert lines["VORA_CONSOLE_SIMULATOR"] == "on  # environment"
    assert lines["VORA_SERVER_API_KEYS"] == "'[1 masked]'  # environment"
    assert lines["VORA_SERVER_API_KEYS_FILE"].endswith("# environment; 1 keys read from the file")
    assert lines["VORA_REDIS_URL"].startswith("'redis://:[masked]@127.0.0.1:6390/3'")
    assert "hunter2" not in shown.output
    assert "srv-config-key" not in shown.output


def test_config_refuses_a_bad_value_by_name(runner: CliRunner) -> None:
    """A value that does not parse makes `vora config` fail with the variable's name, as serving would."""
    shown = runner.invoke(main, ["config"], env={"VORA_SESSION_TTL": "soon"})
    assert shown.exit_code == 1
    assert "VORA_SESSION_TTL" in shown.output


def test_config_json_and_defaults(runner: CliRunner) -> None:
    """--json gives name, value and source per variable; --defaults keeps the old listing of defaults."""
    as_json = runner.invoke(main, ["config", "--json"], env={"VORA_SESSION_TTL": "7200"})
    settings = {entry["name"]: entry for entry in json.loads(as_json.output)}
    assert settings["VORA_SESSION_TTL"]["written"] == "7200"
    assert settings["VORA_SESSION_TTL"]["source"] == "environment"
    defaults = json.loads(runner.invoke(main, ["config", "--defaults"]).output)
    assert defaults["VORA_SESSION_TTL"] == "3600"


def test_identities_add_marks_the_directory_provisioned(runner: CliRunner, redisdb: redis.Redis) -> None:
    """Provisioning from the CLI marks the directory provisioned, as the server API does, once."""
    ownership = Ownership(Directory(redisdb), SessionStore(redisdb, ttl_seconds=60, max_per_user=5))
    assert ownership.status().state is DirectoryState.EMPTY
    assert runner.invoke(main, ["identities", "add", "alice", "942788701"]).exit_code == 0
    first = ownership.status()
    assert first.state is DirectoryState.PROVISIONED
    assert runner.invoke(main, ["identities", "add", "bob", "942788701"]).exit_code == 0
    assert ownership.status() == first  # the first provisioning's time is kept
    redisdb.flushall()  # what a Redis restarted without persistence holds
    assert ownership.status().state is DirectoryState.LOST
