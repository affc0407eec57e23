"""Tests of the structured request log."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from vora.logs import JsonFormatter

Headers = Callable[..., dict[str, str]]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """Render the captured access records as the JSON lines VORA writes."""
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "vora.access"]


def test_one_json_line_per_request(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    """Each request yields one JSON line with id, method, path, status, latency and operation."""
    with caplog.at_level(logging.INFO, logger="vora.access"):
        response = client.get("/vora/health/liveness", headers={"X-Request-ID": "req-1"})
    [line] = access_lines(caplog)
    assert line["request_id"] == response.headers["X-Request-ID"] == "req-1"
    assert line["method"] == "GET"
    assert line["path"] == "/vora/health/liveness"
    assert line["status"] == 204
    assert line["operation"] == "liveness"
    assert isinstance(line["latency_ms"], float)


def test_tokens_never_reach_the_log(
    client: FlaskClient, auth: Headers, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither the Authorization header nor a token in the query string appears in any log line."""
    headers = auth("alice")
    token = headers["Authorization"].split()[1]
    with caplog.at_level(logging.DEBUG):
        client.get("/vora/identity", headers=headers)
        client.post(f"/vora/logout/910111000?token={token}", headers=headers)
        client.get("/vora/identity", headers={"Authorization": "Bearer garbage-secret-value"})
    formatter = JsonFormatter()
    rendered = "\n".join(formatter.format(r) for r in caplog.records) + capsys.readouterr().err
    assert token not in rendered
    assert "garbage-secret-value" not in rendered
    assert "Authorization" not in rendered


def test_redact_masks_every_credential_shape() -> None:
    """Query tokens, bearer values, JWTs and WebSocket tokens are masked; plain lines pass unchanged."""
    from vora.logs import redact

    jwt_like = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
    ws_token = "v1.OTEwMTExMDAw." + "A" * 43
    line = f"GET /vora/ws?token=abc&x=1 Authorization: Bearer xyz {jwt_like} {ws_token}"
    masked = redact(line)
    for secret in ["abc", "xyz", jwt_like, ws_token]:
        assert secret not in masked
    plain = '{"path": "/vora/identity", "status": 200}'
    assert redact(plain) is plain
