"""The development authorization server and a VORA that trusts it: users, clients, the console's URL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from testbed.ports import free_port
from testbed.vora_server import RunningServer, running_server
from tests.harness.devauth import DevAuth
from tests.harness.tokens import AUDIENCE
from vora.store import keys

USER = "carol"


PASSWORD = "carol-s3cret"


SERVICE_CLIENT = "vora-scripts"


SERVICE_SECRET = "scripts-s3cret"


WEB_CLIENT = "vora-web"


IDENTITY = "910111000"


def console_url(port: int) -> str:
    """Return the console URL (the web client's redirect_uri) of a VORA server on this port."""
    return f"http://127.0.0.1:{port}/vora/console/"


def oauth_env(redis_proc: Any, provider: DevAuth, **overrides: str) -> dict[str, str]:
    """Return the VORA_* variables of a server that trusts only this provider."""
    discovery = provider.discovery()
    return {
        "VORA_REDIS_URL": f"redis://{redis_proc.host}:{redis_proc.port}/0",
        "VORA_DEV_KEY": "",  # not the caller's (make exports one): only the provider's keys are trusted
        "VORA_OAUTH_JWKS": provider.jwks_url,
        "VORA_OAUTH_ISSUER": provider.issuer,
        "VORA_OAUTH_AUDIENCE": AUDIENCE,
        "VORA_OAUTH_LEEWAY": "0",
        "VORA_OAUTH_AUTHORIZATION_URL": discovery["authorization_endpoint"],
        "VORA_OAUTH_TOKEN_URL": discovery["token_endpoint"],
        "VORA_OAUTH_WEB_CLIENT_ID": WEB_CLIENT,
        **overrides,
    }


def new_provider(vora_port: int, workdir: Path | None = None, access_token_ttl: int = 600) -> DevAuth:
    """Describe a provider whose web client may return to the console and Swagger UI of VORA on vora_port."""
    return DevAuth(
        audience=AUDIENCE,
        users={USER: PASSWORD},
        web_redirect_uris=[console_url(vora_port), f"http://127.0.0.1:{vora_port}/vora/ui/oauth2-redirect.html"],
        service_clients={SERVICE_CLIENT: SERVICE_SECRET},
        workdir=workdir,
        access_token_ttl=access_token_ttl,
    )


@pytest.fixture(scope="module")
def vora_port() -> int:
    """Return the port the module's VORA server listens on (the provider must know it first)."""
    return free_port()


@pytest.fixture(scope="module")
def provider(vora_port: int) -> Iterator[DevAuth]:
    """Run the dev authorization server for the whole module."""
    with new_provider(vora_port) as running:
        yield running


@pytest.fixture(scope="module")
def oauth_server(
    redis_proc: Any, provider: DevAuth, vora_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Serve VORA trusting the provider (issuer and JWKS URL) for the whole module."""
    env = oauth_env(redis_proc, provider, VORA_JWKS_REFRESH_INTERVAL="1")
    with running_server(env, tmp_path_factory.mktemp("oauth-server"), port=vora_port) as running:
        yield running


@pytest.fixture
def owns(redisdb: redis.Redis) -> Callable[[str, str], None]:
    """Give a user (or a service client) an identity in the directory."""

    def add(subject: str, identity: str = IDENTITY) -> None:
        redisdb.sadd(keys.user_identities(subject), identity)

    return add
