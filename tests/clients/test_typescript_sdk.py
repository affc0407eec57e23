"""The TypeScript SDK's own suite (node --test) against real VORA instances, Redis and signed tokens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.clients.control import Instances, control_server
from tests.conftest import AUDIENCE, ISSUER
from tests.harness.vora_server import REPO
from vora.devkeys import ALL_SCOPES, mint_token

SDK = REPO / "clients" / "typescript"
SERVER_KEY = "sdk-test-server-key-0123456789abcdefghijklmnop"
SUITE_TIMEOUT = 600
# The global WebSocket (as in browsers and Node 22+); one suite file injects the ws package instead.
NODE_FLAGS = ("--experimental-websocket", "--no-warnings", "--test", "--test-concurrency=1")


def _sdk_env(redis_proc: Any, key_dir: Path, jwks_path: Path) -> dict[str, str]:
    return {
        "VORA_REDIS_URL": f"redis://{redis_proc.host}:{redis_proc.port}/0",
        "VORA_DEV_KEY": str(key_dir / "dev-key.pem"),
        "VORA_OAUTH_JWKS": str(jwks_path),
        "VORA_OAUTH_ISSUER": ISSUER,
        "VORA_OAUTH_AUDIENCE": AUDIENCE,
        "VORA_SERVER_API_KEYS": SERVER_KEY,
        "VORA_WS_HEARTBEAT_INTERVAL": "5",
        "VORA_GRACEFUL_TIMEOUT": "5",
    }


@pytest.mark.slow
@pytest.mark.clients
def test_typescript_sdk_suite(
    redis_proc: Any, redisdb: redis.Redis, key_dir: Path, dev_key_pem: bytes, jwks_path: Path, tmp_path: Path
) -> None:
    """Node's test runner passes the SDK's whole suite against real instances started on its request."""
    node = shutil.which("node")
    assert node is not None, "node is required (make install puts npm and node on the machine)"
    # VORA_SDK_TEST_FILES (names such as journey,gap) narrows the run while working on the SDK.
    only = [name for name in os.environ.get("VORA_SDK_TEST_FILES", "").split(",") if name]
    suites = sorted((SDK / "build" / "test").glob("*.test.js"))
    suites = [path for path in suites if not only or path.name.removesuffix(".test.js") in only]
    assert suites, "the SDK's tests are not built: run `make sdk` (make test does)"

    def mint(subject: str, scopes: tuple[str, ...] | None, lifetime: int) -> str:
        return mint_token(dev_key_pem, subject, ISSUER, AUDIENCE, scopes or ALL_SCOPES, lifetime=lifetime)

    instances = Instances(
        _sdk_env(redis_proc, key_dir, jwks_path), tmp_path, redis.Redis(redis_proc.host, redis_proc.port), mint
    )
    with control_server(instances) as control_url:
        env = {**os.environ, "VORA_TEST_CONTROL_URL": control_url, "VORA_TEST_SERVER_KEY": SERVER_KEY}
        log_path = tmp_path / "node-test.log"  # written as the suite runs, so a hang can be watched
        with log_path.open("w") as log:
            result = subprocess.run(
                [
                    node,
                    "--experimental-websocket",
                    "--no-warnings",
                    "--test",
                    "--test-concurrency=1",
                    *map(str, suites),
                ],
                cwd=SDK,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=SUITE_TIMEOUT,
                check=False,
            )
    output = log_path.read_text(errors="replace")
    assert result.returncode == 0, f"node --test failed ({result.returncode}):\n{output[-20000:]}"
    assert "# fail 0" in output, output[-5000:]


@pytest.mark.clients
def test_generated_types_match_the_spec() -> None:
    """The SDK's generated REST and event types are exactly what spec/vora.yaml and the AsyncAPI document generate."""
    node = shutil.which("node")
    assert node is not None, "node is required"
    assert (SDK / "node_modules").is_dir(), "the SDK's packages are not installed: run `make sdk` (make test does)"
    result = subprocess.run(
        [node, "scripts/generate-types.mjs", "--check"],
        cwd=SDK,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.clients
def test_lockfile_records_no_registry_addresses() -> None:
    """The SDK's package-lock.json pins versions and integrity hashes but no registry address (the repo's .npmrc)."""
    lock = json.loads((SDK / "package-lock.json").read_text())
    packages = lock["packages"]
    assert "dependencies" not in packages[""], "the SDK has no runtime dependencies"
    resolved = [name for name, entry in packages.items() if "resolved" in entry]
    assert resolved == [], resolved
    assert all("integrity" in entry for name, entry in packages.items() if name), "every package is pinned by hash"
