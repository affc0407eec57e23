"""Tests of the directory over the server API: provisioning, revocation, resync, and a Redis that lost it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests

from tests.conftest import TokenFactory
from tests.harness import RedisServer
from tests.harness.vora_server import RunningServer, running_server
from tests.server_api.conftest import IDENTITY, ServerApiClient, assert_error_shape
from tests.ws.client import Client
from vora.store import keys

pytestmark = [pytest.mark.slow, pytest.mark.server_api]

OTHER = "602128708"


def test_provisioning_is_idempotent(api: ServerApiClient, redisdb: redis.Redis) -> None:
    """PUT and DELETE of a user's identities answer what changed, and the same request again changes nothing."""
    put = api.request("PUT", "/users/alice/identities", json={"identities": [IDENTITY, OTHER, IDENTITY]})
    assert put.status_code == 200, put.text
    assert put.json() == {
        "user": "alice",
        "identities": sorted([IDENTITY, OTHER]),
        "added": sorted([IDENTITY, OTHER]),
        "removed": [],
        "ended": [],
    }
    again = api.request("PUT", "/users/alice/identities", json={"identities": [OTHER, IDENTITY]}).json()
    assert (again["added"], again["removed"]) == ([], [])
    assert api.request("GET", "/users/alice/identities").json() == {"user": "alice", "identities": [OTHER, IDENTITY]}
    granted = api.request("PUT", "/users/bob/identities/910111000")
    assert granted.json() == {"user": "bob", "identity": IDENTITY, "added": True}
    assert api.request("PUT", "/users/bob/identities/910111000").json()["added"] is False
    revoked = api.request("DELETE", "/users/bob/identities/910111000")
    assert revoked.json() == {"user": "bob", "identity": IDENTITY, "removed": True, "ended": []}
    assert api.request("DELETE", "/users/bob/identities/910111000").json()["removed"] is False
    assert api.request("GET", "/users/bob/identities").json()["identities"] == []
    assert redisdb.smembers(keys.user_identities("alice")) == {IDENTITY.encode(), OTHER.encode()}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/users/alice/identities", {"identities": ["not{an}identity"]}),
        ("PUT", "/users/alice/identities", {"identities": [IDENTITY], "extra": 1}),
        ("PUT", "/users/alice/identities", {"identities": [IDENTITY] * 1001}),
        ("PUT", "/users/a%20b/identities", {"identities": [IDENTITY]}),
        ("PUT", "/users/alice/identities/not{an}identity", None),
        ("POST", "/directory/sync", {"users": []}),
        ("POST", "/directory/sync", {"users": [{"user": "alice"}]}),
    ],
)
def test_bad_provisioning_is_400_and_writes_nothing(
    api: ServerApiClient, redisdb: redis.Redis, method: str, path: str, body: object
) -> None:
    """A bad identity, user, field or list is a 400 in the error shape and writes nothing."""
    assert_error_shape(api.request(method, path, json=body), 400)
    assert redisdb.dbsize() == 0


@pytest.mark.ws
def test_revocation_ends_the_users_sessions_and_sockets(
    api: ServerApiClient,
    server: RunningServer,
    setup_token: Callable[..., str],
    connect: Callable[..., Client],
) -> None:
    """DELETE of one ownership ends that user's sessions on it (channelTerminated revoked), not other users'."""
    alice = connect(server, setup_token(server, subject="alice"))
    bob = connect(server, setup_token(server, subject="bob"))
    revoked = api.request("DELETE", f"/users/alice/identities/{IDENTITY}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["removed"] is True
    assert len(revoked.json()["ended"]) == 1
    terminated = alice.next()
    assert terminated["type"] == "channelTerminated"
    assert terminated["data"] == {"reason": "revoked"}
    assert alice.close_status() == 1000
    sessions = api.request("GET", f"/identities/{IDENTITY}/sessions").json()["sessions"]
    assert [s["user"] for s in sessions] == ["bob"]
    bob.close()


@pytest.mark.ws
def test_replacing_a_users_identities_ends_its_sessions_on_those_it_loses(
    api: ServerApiClient,
    server: RunningServer,
    setup_token: Callable[..., str],
    connect: Callable[..., Client],
) -> None:
    """A PUT that drops an identity ends the user's sessions there, as a revocation does."""
    alice = connect(server, setup_token(server, subject="alice"))
    changed = api.request("PUT", "/users/alice/identities", json={"identities": [OTHER]}).json()
    assert changed["removed"] == [IDENTITY]
    assert len(changed["ended"]) == 1
    assert alice.next()["data"] == {"reason": "revoked"}


def test_sync_sets_many_users_at_once_and_again_changes_nothing(api: ServerApiClient, redisdb: redis.Redis) -> None:
    """A bulk sync replaces each listed user's identities, leaves others alone, and is idempotent."""
    api.request("PUT", "/users/carol/identities", json={"identities": [OTHER]})
    api.request("PUT", "/users/alice/identities", json={"identities": [OTHER]})
    users = [{"user": "alice", "identities": [IDENTITY]}, {"user": "bob", "identities": [IDENTITY, OTHER]}]
    first = api.request("POST", "/directory/sync", json={"users": users})
    assert first.status_code == 200, first.text
    assert [(u["user"], u["added"], u["removed"]) for u in first.json()["users"]] == [
        ("alice", [IDENTITY], [OTHER]),
        ("bob", sorted([IDENTITY, OTHER]), []),
    ]
    second = api.request("POST", "/directory/sync", json={"users": users}).json()
    assert all(u["added"] == [] and u["removed"] == [] for u in second["users"])
    assert redisdb.smembers(keys.user_identities("carol")) == {OTHER.encode()}


@pytest.fixture
def restartable(
    api_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[RedisServer, RunningServer, ServerApiClient]]:
    """Yield a Redis without persistence of this test's own, a server on it and a server API client."""
    with (
        RedisServer() as redis_server,
        running_server({**api_env, "VORA_REDIS_URL": redis_server.url}, tmp_path) as server,
    ):
        api = ServerApiClient(server)
        yield redis_server, server, api
        api.session.close()


def _public(server: RunningServer, make_token: TokenFactory, user: str) -> tuple[requests.Response, requests.Response]:
    """Ask GET /identity and setup for a user, as a softphone does."""
    headers = {"Authorization": f"Bearer {make_token(user)}"}
    identity = requests.get(f"{server.base_url}/identity", headers=headers, timeout=5)
    setup = requests.post(
        f"{server.base_url}/identity/setup",
        json={"connectionType": "WebSocket", "identity": IDENTITY},
        headers=headers,
        timeout=5,
    )
    return identity, setup


def _directory_state(server: RunningServer, api: ServerApiClient) -> tuple[str, str]:
    """Return the directory's state as readiness and as the server API say it."""
    ready = requests.get(f"{server.base_url}/health/readiness", timeout=5)
    assert ready.status_code == 204, ready.text
    state: str = api.request("GET", "/directory").json()["state"]
    return ready.headers["Vora-Directory"], state


def test_a_directory_lost_in_a_redis_restart_is_503_and_said_until_resynchronised(
    restartable: tuple[RedisServer, RunningServer, ServerApiClient], make_token: TokenFactory
) -> None:
    """After Redis restarts empty, GET /identity and setup answer 503 (not 404) and readiness says lost until a sync."""
    redis_server, server, api = restartable
    assert api.request("PUT", "/users/alice/identities", json={"identities": [IDENTITY]}).status_code == 200
    assert _directory_state(server, api) == ("provisioned", "provisioned")
    identity, setup = _public(server, make_token, "alice")
    assert (identity.status_code, setup.status_code) == (200, 200)

    redis_server.restart()  # no persistence: everything is gone

    for response in _public(server, make_token, "alice"):
        error = assert_error_shape(response, 503)
        assert "directory was lost" in error["message"]
        assert int(response.headers["Retry-After"]) > 0
    assert _directory_state(server, api) == ("lost", "lost")

    users = [{"user": "alice", "identities": [IDENTITY]}]
    assert api.request("POST", "/directory/sync", json={"users": users}).status_code == 200
    identity, setup = _public(server, make_token, "alice")
    assert (identity.status_code, setup.status_code) == (200, 200)
    assert _directory_state(server, api) == ("provisioned", "provisioned")


def test_a_never_provisioned_directory_is_503_then_404_once_provisioned(
    restartable: tuple[RedisServer, RunningServer, ServerApiClient], make_token: TokenFactory
) -> None:
    """With no directory yet a user without identities gets 503 (empty); once provisioned, 404 is the honest answer."""
    _, server, api = restartable
    assert _directory_state(server, api) == ("empty", "empty")
    for response in _public(server, make_token, "dave"):
        assert "directory is empty" in assert_error_shape(response, 503)["message"]
    api.request("PUT", "/users/alice/identities", json={"identities": [IDENTITY]})
    identity, setup = _public(server, make_token, "dave")
    assert_error_shape(identity, 404)
    assert_error_shape(setup, 404)
    status = api.request("GET", "/directory").json()
    assert status["state"] == "provisioned"
    assert status["provisionedAt"].endswith("Z")
