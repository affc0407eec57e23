"""Fixtures shared by every VORA test: real Redis, real keys, real tokens, the app."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from pytest_redis import factories

from tests.harness.keys import ec_private_pem, rsa_private_pem, write_jwks
from tests.harness.tokens import AUDIENCE, ISSUER, RSA_KID, TokenFactory
from vora.app import create_app
from vora.auth.devkeys import mint_token
from vora.auth.tokens import public_jwk_from_pem
from vora.core.catalog import ALL_SCOPES
from vora.core.settings import Settings
from vora.services import services_of


def pytest_configure(config: pytest.Config) -> None:
    """Let the processes the tests start take Ctrl-C, even when the run itself was started ignoring it."""
    # A shell starts a background command (`make test &` in a script: no job control) with SIGINT ignored, and every
    # child inherits that: `vora listen` and `make run`'s script would then never see the SIGINT their tests send.
    # A Python handler, unlike SIG_IGN, is reset to the default in the children at exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Fixtures more than one test package uses live in the harness and are registered for all.
pytest_plugins = ["tests.harness.ws_server", "tests.harness.oauth", "tests.harness.benchmark"]

redis_proc = factories.redis_proc()
redisdb = factories.redisdb("redis_proc")


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hold the session's signing keys and JWKS on disk."""
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def dev_key_pem(key_dir: Path) -> bytes:
    """Return the dev (ES256) private key, also written to dev-key.pem."""
    pem = ec_private_pem()
    (key_dir / "dev-key.pem").write_bytes(pem)
    return pem


@pytest.fixture(scope="session")
def rsa_key_pem() -> bytes:
    """Return the private half of the RS256 key the JWKS publishes."""
    return rsa_private_pem()


@pytest.fixture(scope="session")
def jwks_path(key_dir: Path, rsa_key_pem: bytes) -> Path:
    """Write a JWKS file that publishes the RS256 key."""
    return write_jwks(key_dir / "jwks.json", [public_jwk_from_pem(rsa_key_pem, RSA_KID)])


@pytest.fixture
def redis_url(redis_proc: Any) -> str:
    """Return the URL of the redis-server pytest-redis spawned."""
    return f"redis://{redis_proc.host}:{redis_proc.port}/0"


@pytest.fixture
def settings(redis_url: str, key_dir: Path, dev_key_pem: bytes, jwks_path: Path) -> Settings:
    """Build settings that trust the dev key and the test JWKS and use the spawned Redis."""
    return Settings(
        redis_url=redis_url,
        dev_key=key_dir / "dev-key.pem",
        oauth_jwks=str(jwks_path),
        oauth_issuer=ISSUER,
        oauth_audience=AUDIENCE,
        oauth_leeway=0,
    ).checked()


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """Return the VORA_* variables that reproduce the settings fixture for a subprocess."""
    return {
        "VORA_REDIS_URL": settings.redis_url,
        "VORA_DEV_KEY": str(settings.dev_key),
        "VORA_OAUTH_JWKS": settings.oauth_jwks,
        "VORA_OAUTH_ISSUER": settings.oauth_issuer,
        "VORA_OAUTH_AUDIENCE": settings.oauth_audience,
        "VORA_OAUTH_LEEWAY": "0",
    }


@pytest.fixture
def app(settings: Settings, redisdb: redis.Redis) -> Flask:
    """Build the app against a Redis that is flushed after each test."""
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Return a test client of the app."""
    return app.test_client()


@pytest.fixture
def make_token(dev_key_pem: bytes) -> TokenFactory:
    """Mint access tokens signed by the dev key, all scopes by default."""

    def make(subject: str = "alice", scopes: tuple[str, ...] = ALL_SCOPES, **options: Any) -> str:
        return mint_token(dev_key_pem, subject, ISSUER, AUDIENCE, scopes, **options)

    return make


@pytest.fixture
def auth(make_token: TokenFactory) -> Callable[..., dict[str, str]]:
    """Return Authorization headers for a user and scopes."""

    def headers(subject: str = "alice", scopes: tuple[str, ...] = ALL_SCOPES) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(subject, scopes)}"}

    return headers


@pytest.fixture
def provision(app: Flask) -> Callable[[str, list[str]], None]:
    """Give a user identities in the directory."""

    def add(subject: str, identities: list[str]) -> None:
        services_of(app).directory.add(subject, identities)

    return add
