"""Tests of the one Authorization rule REST and the WebSocket share."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from tests.harness.tokens import TokenFactory
from vora.http.bearer import authorization_parts, bearer_token

# (header template, whether it carries a bearer token): the hostile forms once read differently.
HEADERS = [
    ("Bearer {}", True),
    ("bearer {}", True),
    ("BEARER {}", True),
    ("Bearer\t{}", True),
    ("Bearer   {}", True),
    ("Bearer \t {}", True),
    ("Bearer{}", False),
    ("Basic {}", False),
    ("Bearer", False),
    ("", False),
]


@pytest.mark.parametrize(("template", "carries"), HEADERS)
def test_bearer_token_reads_the_token_or_nothing(template: str, carries: bool) -> None:
    """Any whitespace separates scheme and token, the scheme in any case; anything else carries no token."""
    assert bearer_token(template.format("tok.en")) == ("tok.en" if carries else None)


def test_authorization_parts_keeps_other_schemes() -> None:
    """Another scheme is split too (so that Connexion can tell it apart); a lone word is not a header."""
    assert authorization_parts("Basic dXNlcjpw") == ("basic", "dXNlcjpw")
    assert authorization_parts("Bearer") is None
    assert authorization_parts(None) is None


@pytest.mark.parametrize(("template", "carries"), HEADERS)
def test_rest_reads_the_header_by_the_same_rule(
    client: FlaskClient,
    make_token: TokenFactory,
    provision: Callable[[str, list[str]], None],
    template: str,
    carries: bool,
) -> None:
    """GET /identity accepts exactly the headers bearer_token reads a token from; the others get 401."""
    provision("alice", ["910111000"])
    header = template.format(make_token("alice"))
    response = client.get("/vora/identity", headers={"Authorization": header} if header else {})
    assert response.status_code == (200 if carries else 401), response.get_data(as_text=True)
