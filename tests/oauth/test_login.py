"""Tokens from the real dev authorization server (oidc-provider) against the real VORA server."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from jose import jwt

from testbed.ports import free_port
from testbed.vora_server import RunningServer, running_server
from testbed.wait import wait_for
from tests.harness.devauth import DevAuth
from tests.harness.oauth import (
    IDENTITY,
    PASSWORD,
    SERVICE_CLIENT,
    SERVICE_SECRET,
    USER,
    WEB_CLIENT,
    console_url,
    new_provider,
    oauth_env,
)
from tests.harness.oauth_flow import LoginRefused, Tokens, authorization_code_login, client_credentials_token
from tests.harness.tokens import AUDIENCE
from tests.harness.ws_client import open_client
from vora.core.catalog import ALL_SCOPES
from vora.core.settings import DEFAULT_SPEC_DIR

pytestmark = [pytest.mark.slow, pytest.mark.oauth]


def secured_operations() -> set[str]:
    """Return the operationIds the spec protects with security_auth."""
    spec = yaml.safe_load((DEFAULT_SPEC_DIR / "vora.yaml").read_text())
    return {
        operation["operationId"]
        for item in spec["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and any("security_auth" in s for s in operation.get("security", [{}]))
    }


def bearer(token: str) -> dict[str, str]:
    """Return the Authorization header for an access token."""
    return {"Authorization": f"Bearer {token}"}


def test_pkce_login_token_works_on_every_secured_operation(
    oauth_server: RunningServer, login: Callable[..., Tokens], owns: Callable[..., None]
) -> None:
    """An access token from the authorization code + PKCE login is accepted by every secured operation."""
    owns(USER)
    headers = bearer(login().access_token)
    base = oauth_server.base_url
    called: dict[str, int] = {}
    called["identities"] = requests.get(f"{base}/identity", headers=headers, timeout=5).status_code
    setup = requests.post(
        f"{base}/identity/setup", json={"connectionType": "WebSocket", "identity": IDENTITY}, headers=headers, timeout=5
    )
    called["setup"] = setup.status_code
    called["events"] = requests.post(
        f"{base}/identity/{IDENTITY}/eventSubscription", json={"subscribeAll": True}, headers=headers, timeout=5
    ).status_code
    socket = open_client(oauth_server.ws_url, setup.json()["webSocketToken"])
    try:
        called["logout"] = requests.post(f"{base}/logout/{IDENTITY}", headers=headers, timeout=5).status_code
        assert socket.next()["data"] == {"reason": "logout"}
    finally:
        socket.close()
    assert set(called) == secured_operations()
    assert called == dict.fromkeys(called, 200)


def test_pkce_access_token_carries_aud_iss_exp_sub_and_scopes(provider: DevAuth, login: Callable[..., Tokens]) -> None:
    """The provider's access token is a JWT for VORA's audience with the user as sub and VORA's four scopes."""
    tokens = login()
    claims = jwt.get_unverified_claims(tokens.access_token)
    assert claims["sub"] == USER
    assert claims["iss"] == provider.issuer
    assert claims["aud"] == AUDIENCE
    assert claims["exp"] > claims["iat"]
    assert set(claims["scope"].split()) == set(ALL_SCOPES)
    assert jwt.get_unverified_header(tokens.access_token)["kid"] == provider.kid
    assert tokens.id_token is not None


def test_wrong_password_gets_no_code(login: Callable[..., Tokens]) -> None:
    """The provider's login page refuses a wrong password and issues no authorization code."""
    with pytest.raises(LoginRefused, match="401"):
        login(password=PASSWORD + "x")


def test_client_credentials_token_acts_as_the_client(
    provider: DevAuth, oauth_server: RunningServer, owns: Callable[..., None]
) -> None:
    """A client-credentials token has the client id as sub and reaches the identities provisioned for it."""
    token = client_credentials_token(provider.discovery(), SERVICE_CLIENT, SERVICE_SECRET, ALL_SCOPES)
    assert jwt.get_unverified_claims(token)["sub"] == SERVICE_CLIENT
    owns(SERVICE_CLIENT)
    response = requests.get(f"{oauth_server.base_url}/identity", headers=bearer(token), timeout=5)
    assert response.status_code == 200
    assert response.json() == {"identities": [IDENTITY]}


def test_token_from_another_issuer_is_refused(
    provider: DevAuth, oauth_server: RunningServer, owns: Callable[..., None], tmp_path: Path
) -> None:
    """A token signed with a key VORA trusts but issued by another issuer is refused with 401."""
    owns(USER)
    # Same signing key, another issuer URL: only the iss claim can tell the tokens apart.
    (tmp_path / "devauth-jwks.json").write_text(provider.jwks_file.read_text())
    with new_provider(oauth_server.port, workdir=tmp_path) as impostor:
        assert impostor.issuer != provider.issuer
        tokens = authorization_code_login(
            impostor.discovery(), WEB_CLIENT, console_url(oauth_server.port), USER, PASSWORD
        )
    response = requests.get(f"{oauth_server.base_url}/identity", headers=bearer(tokens.access_token), timeout=5)
    assert response.status_code == 401
    assert "Invalid issuer" in response.json()["message"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_key_rotation_is_picked_up_through_the_jwks_url(
    redis_proc: Any, owns: Callable[..., None], tmp_path: Path
) -> None:
    """After the provider swaps its signing key, the running VORA accepts new tokens and refuses the old key."""
    owns(USER)
    with running_rotation_pair(redis_proc, tmp_path) as (provider, server):
        url = f"{server.base_url}/identity"
        discovery = provider.discovery()
        redirect = console_url(server.port)
        used = authorization_code_login(discovery, WEB_CLIENT, redirect, USER, PASSWORD).access_token
        unused = authorization_code_login(discovery, WEB_CLIENT, redirect, USER, PASSWORD).access_token
        assert requests.get(url, headers=bearer(used), timeout=5).status_code == 200
        old_kid = provider.kid

        new_kid = provider.rotate_key()

        assert new_kid != old_kid
        fresh = authorization_code_login(provider.discovery(), WEB_CLIENT, redirect, USER, PASSWORD).access_token
        assert jwt.get_unverified_header(fresh)["kid"] == new_kid
        # VORA reloads the JWKS on an unknown kid at most once per VORA_JWKS_REFRESH_INTERVAL (1 s here).
        wait_for(
            lambda: requests.get(url, headers=bearer(fresh), timeout=5).status_code == 200,
            15,
            what="VORA to accept a token signed with the provider's new key",
        )
        refused = requests.get(url, headers=bearer(unused), timeout=5)
        assert refused.status_code == 401
        assert "key VORA does not trust" in refused.json()["message"]


@contextlib.contextmanager
def running_rotation_pair(redis_proc: Any, workdir: Path) -> Iterator[tuple[DevAuth, RunningServer]]:
    """Run a provider and a VORA server that trusts it (JWKS refresh every second), both for one test."""
    port = free_port()
    with new_provider(port, workdir=workdir) as provider:
        env = oauth_env(redis_proc, provider, VORA_JWKS_REFRESH_INTERVAL="1")
        with running_server(env, workdir, port=port) as server:
            yield provider, server
