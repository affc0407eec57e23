"""REST calls the tests share: setting up a session, the stored token hashes, the error shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis
from flask.testing import FlaskClient

from vora.store import keys

IDENTITY = "910111000"


SETUP = "/vora/identity/setup"


def assert_error(response: Any, status: int, *fragments: str) -> dict[str, str]:
    """Check a response is the VORA error shape with this status and message fragments."""
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"timestamp", "status", "error", "message"}
    assert body["status"] == str(status)
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert body["timestamp"].endswith("Z")
    for fragment in fragments:
        assert fragment in body["message"]
    return dict(body)


def setup_session(client: FlaskClient, headers: dict[str, str], identity: str = IDENTITY, **extra: Any) -> str:
    """Open a session and return its WebSocket token."""
    response = client.post(SETUP, json={"connectionType": "WebSocket", "identity": identity, **extra}, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    token: str = response.get_json()["webSocketToken"]
    return token


def session_hashes(redisdb: redis.Redis, identity: str = IDENTITY) -> list[dict[bytes, bytes]]:
    """Read every session hash of an identity."""
    ids = redisdb.zrange(keys.sessions_index(identity), 0, -1)
    return [redisdb.hgetall(keys.session(identity, sid.decode())) for sid in ids]  # type: ignore[misc, union-attr] # redis-py types sync replies as Awaitable | Any
