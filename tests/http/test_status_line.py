"""The status lines both listeners write: RFC 9110's reason phrases, whatever Werkzeug would say."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from vora.http.status_line import standard_status_line


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("401 UNAUTHORIZED", "401 Unauthorized"),
        ("405 METHOD NOT ALLOWED", "405 Method Not Allowed"),
        ("200 OK", "200 OK"),
        ("299 SOMETHING ELSE", "299 SOMETHING ELSE"),
        ("abc", "abc"),
    ],
    ids=["werkzeug-upper-case", "several-words", "already-standard", "unknown-code", "not-a-status"],
)
def test_standard_status_line_rewrites_only_known_codes(given: str, written: str) -> None:
    """A known code gets its standard phrase; an unknown code or a malformed status passes unchanged."""
    assert standard_status_line(given) == written


def test_the_public_api_writes_standard_reason_phrases(
    client: FlaskClient, auth: Callable[..., dict[str, str]]
) -> None:
    """A refusal, a missing path, a wrong method and a socket refusal say what RFC 9110 says, as the server API does."""
    answers = {
        "no token": client.get("/vora/identity").status,
        "no such path": client.get("/vora/nowhere", headers=auth("alice")).status,
        "wrong method": client.put("/vora/identity", headers=auth("alice")).status,
        "socket refused": client.get("/vora/ws").status,
        "stream probed": client.head("/vora/sse").status,
        "stream outside gunicorn": client.get("/vora/sse", query_string={"token": "t"}).status,
        "answered": client.options("/vora/identity").status,
    }
    assert answers == {
        "no token": "401 Unauthorized",
        "no such path": "404 Not Found",
        "wrong method": "405 Method Not Allowed",
        "socket refused": "400 Bad Request",
        "stream probed": "401 Unauthorized",
        "stream outside gunicorn": "501 Not Implemented",
        "answered": "200 OK",
    }
