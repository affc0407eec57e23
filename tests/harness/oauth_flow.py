"""Drive OAuth2 flows against the dev authorization server over plain HTTP, the way a browser would."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import requests

from vora.core.catalog import ALL_SCOPES

_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')
_MAX_REDIRECTS = 10


class LoginRefused(AssertionError):
    """The provider did not send the browser back to the client with a code."""


@dataclass(frozen=True)
class Tokens:
    """What the token endpoint returned for an authorization code."""

    access_token: str
    id_token: str | None
    scope: str
    raw: dict[str, Any]


def pkce_pair() -> tuple[str, str]:
    """Return a new PKCE code_verifier and its S256 code_challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorization_code_login(
    discovery: dict[str, Any],
    client_id: str,
    redirect_uri: str,
    username: str,
    password: str,
    scopes: tuple[str, ...] = ("openid", *ALL_SCOPES),
) -> Tokens:
    """Log a user in with the authorization code flow and PKCE, posting the provider's own login form."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    browser = requests.Session()
    page = browser.get(
        discovery["authorization_endpoint"],
        params={
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        timeout=10,
    )
    action = _FORM_ACTION.search(page.text)
    if page.status_code != 200 or action is None:
        raise LoginRefused(f"no login form ({page.status_code}): {page.text[:300]}")
    response = browser.post(
        urljoin(page.url, html.unescape(action.group(1))),
        data={"login": username, "password": password},
        allow_redirects=False,
        timeout=10,
    )
    for _ in range(_MAX_REDIRECTS):
        location = response.headers.get("Location", "")
        if response.status_code not in (302, 303) or not location:
            raise LoginRefused(f"login answered {response.status_code}: {response.text[:300]}")
        target = urljoin(response.url, location)
        if target.startswith(redirect_uri):
            break
        response = browser.get(target, allow_redirects=False, timeout=10)
    else:
        raise LoginRefused("the provider redirected too many times")
    query = parse_qs(urlsplit(target).query)
    if query.get("state") != [state] or "code" not in query:
        raise LoginRefused(f"the redirect carries no code for our state: {target}")
    token = requests.post(
        discovery["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    body: dict[str, Any] = token.json()
    return Tokens(body["access_token"], body.get("id_token"), body.get("scope", ""), body)


def client_credentials_token(discovery: dict[str, Any], client_id: str, secret: str, scopes: tuple[str, ...]) -> str:
    """Return an access token for a service client (client credentials grant)."""
    response = requests.post(
        discovery["token_endpoint"],
        data={"grant_type": "client_credentials", "scope": " ".join(scopes)},
        auth=(client_id, secret),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


class ClientCredentials:
    """An SDK access-token provider, as an app writes one: client credentials, cached, fetched anew when refused."""

    def __init__(self, token_url: str, client_id: str, secret: str, scopes: tuple[str, ...]) -> None:
        self.token_url = token_url
        self.auth = (client_id, secret)
        self.scope = " ".join(scopes)
        self.token: str | None = None
        self.expires_at = 0.0
        self.fetched: list[str] = []
        self.refreshes = 0

    async def __call__(self, *, refresh: bool = False) -> str:
        """Return the cached access token, or a new one at first and whenever VORA refused the last (refresh)."""
        self.refreshes += refresh
        if self.token is None or refresh:
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.post(
                    self.token_url, data={"grant_type": "client_credentials", "scope": self.scope}, auth=self.auth
                )
            answer.raise_for_status()
            body: dict[str, Any] = answer.json()
            self.token = str(body["access_token"])
            self.expires_at = time.time() + float(body["expires_in"])
            self.fetched.append(self.token)
        return self.token
