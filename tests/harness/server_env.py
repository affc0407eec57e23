"""The environment every test server starts from: its Redis and the dev key the test tokens are signed with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.harness.tokens import AUDIENCE, ISSUER


def server_env(redis_proc: Any, key_dir: Path, jwks_path: Path | None = None, **overrides: str) -> dict[str, str]:
    """Return the VORA_* variables of a test server on redis_proc trusting the test key, plus overrides."""
    env = {
        "VORA_REDIS_URL": f"redis://{redis_proc.host}:{redis_proc.port}/0",
        "VORA_DEV_KEY": str(key_dir / "dev-key.pem"),
        "VORA_OAUTH_ISSUER": ISSUER,
        "VORA_OAUTH_AUDIENCE": AUDIENCE,
    }
    if jwks_path is not None:
        env["VORA_OAUTH_JWKS"] = str(jwks_path)
    return {**env, **overrides}
