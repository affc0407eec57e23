"""Hostile and careless input to the server API: deep nesting, oversized batches, and how its answers are written."""

from __future__ import annotations

import http.client

import pytest
import redis

from tests.harness.vora_server import RunningServer
from tests.server_api.conftest import IDENTITY, SERVER_KEY, ServerApiClient, assert_error_shape

pytestmark = [pytest.mark.slow, pytest.mark.server_api]

RINGING = {"type": "callRinging", "data": {"callId": "c-1", "from": "+34602128708"}}
ITEM = '{"identity": "910111000", "type": "presence", "data": DATA}'


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [900, 1000, 5000, 30_000])
@pytest.mark.parametrize(
    ("path", "template"),
    [
        (f"/identities/{IDENTITY}/events", '{"type": "callRinging", "data": {"callId": DEEP}}'),
        (f"/identities/{IDENTITY}/events", '{"type": "presence", "data": {"status": "busy"}, "x": DEEP}'),
        (f"/identities/{IDENTITY}/events", "DEEP"),
        ("/events/batch", '{"events": DEEP}'),
        ("/events/batch", '{"events": [' + ITEM.replace("DATA", '{"status": DEEP}') + "]}"),
        ("/events/batch", '{"events": [' + ITEM.replace("DATA", '{"x": DEEP}') + "]}"),
        ("/events/batch", '{"events": [{"identity": DEEP, "type": "presence", "data": {}}]}'),
    ],
)
def test_deeply_nested_json_is_400_like_the_public_api(
    api: ServerApiClient, server: RunningServer, redisdb: redis.Redis, path: str, template: str, depth: int
) -> None:
    """JSON nested 900 to 30,000 deep anywhere in a publish or a batch is a 400 (or a refused item), never a 500."""
    before = server.log()
    body = template.replace("DEEP", _nested(depth))
    response = api.request("POST", path, data=body, headers={"Content-Type": "application/json"})
    if response.status_code == 200:
        result = response.json()
        assert result["refused"] == 1, result
        assert result["results"][0]["error"]["status"] == "400"
        assert len(response.content) < 2048
    else:
        assert_error_shape(response, 400)
    assert redisdb.dbsize() == 0
    logged = server.log()[len(before) :]
    assert "Traceback" not in logged
    assert "RecursionError" not in logged


def test_batch_over_the_item_limit_is_a_short_400_without_the_input(api: ServerApiClient, redisdb: redis.Redis) -> None:
    """A batch over the spec's 1,000 items is a 400 whose message is short and quotes none of the items."""
    items = [{"identity": IDENTITY, **RINGING, "idempotencyKey": f"echo-canary-{n}"} for n in range(1001)]
    response = api.request("POST", "/events/batch", json={"events": items})
    error = assert_error_shape(response, 400)
    assert len(response.content) < 512, len(response.content)
    assert "echo-canary" not in response.text
    assert "events" in error["message"]
    assert "1000" in error["message"]
    assert redisdb.dbsize() == 0


@pytest.mark.parametrize(
    "data",
    [
        {"status": {f"k{n}": "echo-canary" for n in range(5000)}},
        {"status": "busy", **{f"echo-canary-{n}": 1 for n in range(5000)}},
        {"status": ["echo-canary"] * 5000},
        {"status": "busy", "note": "echo-canary" * 1000},
    ],
    ids=["object-for-string", "unexpected-properties", "array-for-string", "long-string"],
)
def test_errors_quote_no_large_value(api: ServerApiClient, redisdb: redis.Redis, data: dict[str, object]) -> None:
    """A large value where it does not belong is refused with a short message that does not repeat it."""
    response = api.publish(IDENTITY, {"type": "presence", "data": data})
    assert_error_shape(response, 400)
    assert len(response.content) < 512, len(response.content)
    assert response.text.count("echo-canary") <= 5
    assert redisdb.dbsize() == 0


def _raw(server: RunningServer, method: str, path: str, body: bytes | None = None) -> tuple[str, bytes]:
    """Send one request over a plain HTTP connection and return its status line (without the version) and body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_api_port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {SERVER_KEY}", "Content-Type": "application/json"}
        connection.request(method, "/vora/server/v1" + path, body=body, headers=headers)
        response = connection.getresponse()
        return f"{response.status} {response.reason}", response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "status_line"),
    [
        ("GET", f"/identities/{IDENTITY}/online", None, "200 OK"),
        ("POST", f"/identities/{IDENTITY}/events", b"{not json", "400 Bad Request"),
        ("GET", "/no/such/path", None, "404 Not Found"),
        ("PUT", f"/identities/{IDENTITY}/events", b"{}", "405 Method Not Allowed"),
        ("POST", f"/identities/{IDENTITY}/events", b'{"type": "presence", "data": {}}', "400 Bad Request"),
    ],
)
def test_answers_are_compact_json_with_standard_reason_phrases(
    server: RunningServer, redisdb: redis.Redis, method: str, path: str, body: bytes | None, status_line: str
) -> None:
    """Every answer has the RFC 9110 reason phrase ("400 Bad Request") and JSON on one line, not indented."""
    line, payload = _raw(server, method, path, body)
    assert line == status_line
    assert payload.startswith(b"{"), payload
    assert b"\n" not in payload.rstrip(b"\n"), payload  # one line, as the public API answers
