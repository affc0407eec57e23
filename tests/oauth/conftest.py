"""Fixtures for tests against the real dev authorization server: the provider, VORA trusting it, logins."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from testbed.vora_server import RunningServer
from tests.harness.devauth import DevAuth
from tests.harness.oauth import PASSWORD, USER, WEB_CLIENT, console_url
from tests.harness.oauth_flow import Tokens, authorization_code_login


@pytest.fixture
def login(provider: DevAuth, oauth_server: RunningServer) -> Callable[..., Tokens]:
    """Log a user in through the provider's login page (authorization code + PKCE)."""

    def log_in(username: str = USER, password: str = PASSWORD, on: DevAuth | None = None) -> Tokens:
        return authorization_code_login(
            (on or provider).discovery(), WEB_CLIENT, console_url(oauth_server.port), username, password
        )

    return log_in
