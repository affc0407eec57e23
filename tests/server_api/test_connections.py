"""Tests of looking up and ending an identity's sessions over the server API, with real sockets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests

from testbed.vora_server import RunningServer
from testbed.wait import wait_for
from tests.harness.server_api import IDENTITY, ServerApiClient, assert_error_shape
from tests.harness.tokens import TokenFactory
from tests.harness.ws_client import Client

pytestmark = [pytest.mark.slow, pytest.mark.server_api, pytest.mark.ws]


def _sessions(api: ServerApiClient) -> dict[str, Any]:
    response = api.request("GET", f"/identities/{IDENTITY}/sessions")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _sessions_once(api: ServerApiClient, sockets: int, what: str) -> dict[str, Any]:
    """Wait until the identity's sessions hold this many open sockets in all, and return the list."""

    def ready() -> dict[str, Any] | None:
        body = _sessions(api)
        return body if sum(s["sockets"] for s in body["sessions"]) == sockets else None

    return wait_for(ready, timeout=10, what=what)


def test_sessions_list_their_sockets(
    api: ServerApiClient,
    server: RunningServer,
    setup_token: Callable[..., str],
    connect: Callable[..., Client],
    make_token: TokenFactory,
) -> None:
    """Each session shows its user, subscription, holdUpMode and how many sockets it has open on any instance."""
    quiet = setup_token(server, subject="alice")
    busy = setup_token(server, subject="bob")
    requests.post(
        f"{server.base_url}/identity/{IDENTITY}/eventSubscription",
        json={"subscribeAll": False, "events": ["callRinging", "presence"]},
        headers={"Authorization": f"Bearer {make_token('bob')}"},
        timeout=5,
    ).raise_for_status()
    assert quiet != busy
    connect(server, busy)
    connect(server, busy)
    body = _sessions_once(api, 2, "both sockets in the presence set")
    assert body["online"] is True
    by_user = {s["user"]: s for s in body["sessions"]}
    assert set(by_user) == {"alice", "bob"}
    assert by_user["alice"]["socketOpen"] is False
    assert by_user["alice"]["sockets"] == 0
    assert by_user["alice"]["subscription"] == {"subscribeAll": True, "events": []}
    assert by_user["alice"]["holdUpMode"] is False
    assert by_user["alice"]["connectionType"] == "WebSocket"
    assert by_user["bob"]["socketOpen"] is True
    assert by_user["bob"]["sockets"] == 2
    assert by_user["bob"]["subscription"] == {"subscribeAll": False, "events": ["callRinging", "presence"]}
    assert by_user["alice"]["createdAt"] <= by_user["bob"]["createdAt"]
    online = api.request("GET", f"/identities/{IDENTITY}/online").json()
    assert online == {"identity": IDENTITY, "online": True, "sockets": 2}


def test_identity_without_sessions_is_offline(api: ServerApiClient) -> None:
    """An identity nobody set up has no sessions and is offline (not a 404: the server API does not own users)."""
    assert _sessions(api) == {"identity": IDENTITY, "online": False, "sessions": []}


def test_disconnect_identity_closes_every_socket_with_the_reason(
    api: ServerApiClient,
    server: RunningServer,
    redisdb: redis.Redis,
    setup_token: Callable[..., str],
    connect: Callable[..., Client],
) -> None:
    """Ending an identity ends every user's session on it; each socket gets channelTerminated(reason) and 1000."""
    first = connect(server, setup_token(server, subject="alice"))
    second = connect(server, setup_token(server, subject="bob"))
    _sessions_once(api, 2, "both sockets open")
    response = api.request("DELETE", f"/identities/{IDENTITY}/sessions", params={"reason": "revoked"})
    assert response.status_code == 200, response.text
    assert response.json()["reason"] == "revoked"
    assert len(response.json()["ended"]) == 2
    for client in (first, second):
        terminated = client.next()
        assert terminated["type"] == "channelTerminated"
        assert terminated["data"] == {"reason": "revoked"}
        assert client.close_status() == 1000
    assert _sessions(api)["sessions"] == []
    again = api.request("DELETE", f"/identities/{IDENTITY}/sessions")
    assert again.json() == {"identity": IDENTITY, "reason": "disconnected", "ended": []}


def test_disconnect_one_session_leaves_the_others(
    api: ServerApiClient,
    server: RunningServer,
    setup_token: Callable[..., str],
    connect: Callable[..., Client],
) -> None:
    """Ending one session closes its socket with reason disconnected and leaves the identity's other sessions."""
    ended = connect(server, setup_token(server, subject="alice"))
    kept = connect(server, setup_token(server, subject="bob"))
    sessions = _sessions_once(api, 2, "both sockets open")["sessions"]
    alice = next(s["sessionId"] for s in sessions if s["user"] == "alice")
    response = api.request("DELETE", f"/identities/{IDENTITY}/sessions/{alice}")
    assert response.json() == {"identity": IDENTITY, "reason": "disconnected", "ended": [alice]}
    assert ended.next()["data"] == {"reason": "disconnected"}
    assert ended.close_status() == 1000
    assert [s["user"] for s in _sessions(api)["sessions"]] == ["bob"]
    published = api.publish(IDENTITY, {"type": "presence", "data": {"status": "busy"}}).json()
    assert kept.next()["eventId"] == published["eventId"]
    gone = api.request("DELETE", f"/identities/{IDENTITY}/sessions/{alice}")
    assert alice in assert_error_shape(gone, 404)["message"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (f"/identities/{IDENTITY}/sessions", {"reason": "logout"}),
        (f"/identities/{IDENTITY}/sessions/not-a-session", {}),
        ("/identities/bad%20identity/sessions", {}),
    ],
)
def test_bad_disconnect_is_400_and_ends_nothing(
    api: ServerApiClient,
    server: RunningServer,
    redisdb: redis.Redis,
    setup_token: Callable[..., str],
    path: str,
    params: dict[str, str],
) -> None:
    """A reason the server API may not send, a malformed session id or identity is a 400 naming it; it ends nothing."""
    setup_token(server)
    body = assert_error_shape(api.request("DELETE", path, params=params), 400)
    assert body["message"].startswith(("reason: ", "sessionId: ", "identity: "))
    assert len(_sessions(api)["sessions"]) == 1
