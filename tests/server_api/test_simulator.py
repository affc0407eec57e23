"""Tests of the console's telephony simulator (/vora/console/simulator) on a real server, Redis, tokens and sockets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests

from testbed.vora_server import RunningServer, running_server
from testbed.wait import wait_for
from tests.harness.metrics import sample
from tests.harness.server_api import IDENTITY, SERVER_KEY, ServerApiClient, assert_error_shape, stream_length
from tests.harness.tokens import TokenFactory
from tests.harness.ws_client import Client
from vora.core.catalog import SUBSCRIBABLE_EVENTS
from vora.store import keys

pytestmark = [pytest.mark.slow, pytest.mark.server_api, pytest.mark.ws]

SIMULATOR = "/vora/console/simulator"
OTHER_IDENTITY = "910111999"


@pytest.fixture(scope="module")
def simulator_server(api_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Serve VORA with the simulator on (as `make run` does) and its server API, for the whole module."""
    env = {**api_env, "VORA_CONSOLE_SIMULATOR": "1"}
    with running_server(env, tmp_path_factory.mktemp("simulator")) as running:
        yield running


def _url(server: RunningServer, path: str = "") -> str:
    return f"http://127.0.0.1:{server.port}{SIMULATOR}{path}"


def _call(
    server: RunningServer, method: str, path: str = "", token: str | None = None, **options: Any
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.request(method, _url(server, path), headers=headers, timeout=10, **options)


def _own(redisdb: redis.Redis, subject: str = "alice", identity: str = IDENTITY) -> None:
    redisdb.sadd(keys.user_identities(subject), identity)


def _push_jobs(redisdb: redis.Redis) -> int:
    return int(redisdb.xlen(keys.PUSH_JOBS))  # type: ignore[arg-type] # redis-py types sync replies as Awaitable | Any


ROUTES = (("GET", ""), ("GET", f"/{IDENTITY}"), ("POST", f"/{IDENTITY}/events"))


def test_off_by_default_every_route_is_404(server: RunningServer, make_token: TokenFactory) -> None:
    """Without VORA_CONSOLE_SIMULATOR every simulator path and method answers 404 in the error shape, token or not."""
    for method, path in (*ROUTES, ("DELETE", f"/{IDENTITY}"), ("GET", "/anything/else")):
        for token in (None, make_token("alice")):
            response = _call(server, method, path, token, json={"type": "presence", "data": {"status": "busy"}})
            body = assert_error_shape(response, 404)
            assert body["message"] == f"No resource at {SIMULATOR}{path}"
            assert "WWW-Authenticate" not in response.headers


def test_templates_publish_to_a_real_socket_of_the_identity(
    simulator_server: RunningServer,
    redisdb: redis.Redis,
    make_token: TokenFactory,
    setup_token: Callable[..., str],
    connect: Callable[..., Client],
) -> None:
    """Every template of the catalogue is accepted by the publish and arrives, as sent, on the identity's WebSocket."""
    token = make_token("alice")
    client = connect(simulator_server, setup_token(simulator_server, subject="alice"))
    listed = _call(simulator_server, "GET", "", token)
    assert listed.status_code == 200, listed.text
    templates = listed.json()["templates"]
    assert list(templates) == list(SUBSCRIBABLE_EVENTS)
    answers = []
    for event_type, data in templates.items():
        response = _call(
            simulator_server, "POST", f"/{IDENTITY}/events", token, json={"type": event_type, "data": data}
        )
        assert response.status_code == 202, response.text
        assert set(response.json()) == {"eventId", "sequenceNumber", "type"}
        assert response.json()["type"] == event_type
        answers.append(response.json())
    received = client.events(len(templates))
    assert [(e["type"], e["data"]) for e in received] == list(templates.items())
    assert [(e["eventId"], e["sequenceNumber"]) for e in received] == [
        (a["eventId"], a["sequenceNumber"]) for a in answers
    ]


def test_status_shows_what_list_sessions_shows(
    simulator_server: RunningServer,
    redisdb: redis.Redis,
    make_token: TokenFactory,
    setup_token: Callable[..., str],
    connect: Callable[..., Client],
) -> None:
    """The status is the server API's listSessions for the identity: offline with a session, online with a socket."""
    token = make_token("alice")
    _own(redisdb)
    empty = _call(simulator_server, "GET", f"/{IDENTITY}", token)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {"identity": IDENTITY, "online": False, "sessions": []}
    ws_token = setup_token(simulator_server, subject="alice")
    offline = _call(simulator_server, "GET", f"/{IDENTITY}", token).json()
    assert offline["online"] is False
    assert [(s["user"], s["socketOpen"], s["sockets"]) for s in offline["sessions"]] == [("alice", False, 0)]
    connect(simulator_server, ws_token)
    online = wait_for(
        lambda: (body := _call(simulator_server, "GET", f"/{IDENTITY}", token).json())["online"] and body,
        timeout=10,
        what="the socket in the identity's presence",
    )
    assert [(s["socketOpen"], s["sockets"]) for s in online["sessions"]] == [(True, 1)]
    listed = ServerApiClient(simulator_server).request("GET", f"/identities/{IDENTITY}/sessions")
    assert listed.json() == online


def test_a_simulated_publish_is_counted_and_wakes_as_a_real_one(
    simulator_server: RunningServer, redisdb: redis.Redis, make_token: TokenFactory
) -> None:
    """Each simulated event counts in vora_events_published_total; an inbound callRinging alone queues a push job."""
    _own(redisdb)
    token = make_token("alice")

    def published(event_type: str) -> float:
        text = requests.get(simulator_server.metrics_url, timeout=10).text
        return sample(text, "vora_events_published_total", type=event_type)

    before = {t: published(t) for t in ("callRinging", "presence")}
    jobs = _push_jobs(redisdb)
    for event in (
        {"type": "presence", "data": {"status": "away"}},
        {"type": "callRinging", "data": {"callId": "c-1", "direction": "outbound"}},
    ):
        assert _call(simulator_server, "POST", f"/{IDENTITY}/events", token, json=event).status_code == 202
    assert _push_jobs(redisdb) == jobs
    ringing = {"type": "callRinging", "data": {"callId": "c-2", "direction": "inbound", "from": "+34602128708"}}
    assert _call(simulator_server, "POST", f"/{IDENTITY}/events", token, json=ringing).status_code == 202
    assert _push_jobs(redisdb) == jobs + 1
    assert published("presence") == before["presence"] + 1
    assert published("callRinging") == before["callRinging"] + 2


def test_another_users_identity_is_forbidden(
    simulator_server: RunningServer, redisdb: redis.Redis, make_token: TokenFactory
) -> None:
    """An identity the directory gives another user is 403 for status and publish, and nothing is stored."""
    _own(redisdb, "alice", IDENTITY)
    _own(redisdb, "bob", OTHER_IDENTITY)
    token = make_token("alice")
    event = {"type": "presence", "data": {"status": "busy"}}
    assert_error_shape(_call(simulator_server, "GET", f"/{OTHER_IDENTITY}", token), 403)
    body = assert_error_shape(_call(simulator_server, "POST", f"/{OTHER_IDENTITY}/events", token, json=event), 403)
    assert OTHER_IDENTITY in body["message"]
    assert stream_length(redisdb, OTHER_IDENTITY) == 0


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_or_bad_token_is_401(
    simulator_server: RunningServer, redisdb: redis.Redis, make_token: TokenFactory, method: str, path: str
) -> None:
    """Without an access token, with garbage, an expired one or a server API key, every route answers 401."""
    _own(redisdb)
    event = {"type": "presence", "data": {"status": "busy"}}
    expired = make_token("alice", now=time.time() - 7200)
    for token in (None, "not-a-token", expired, SERVER_KEY):
        response = _call(simulator_server, method, path, token, json=event)
        assert_error_shape(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert stream_length(redisdb) == 0


def test_a_token_without_the_identities_scope_is_403(
    simulator_server: RunningServer, redisdb: redis.Redis, make_token: TokenFactory
) -> None:
    """A token lacking scope.vora.identities is refused 403, as the REST API refuses it."""
    _own(redisdb)
    token = make_token("alice", ("scope.vora.calls",))
    event = {"type": "presence", "data": {"status": "busy"}}
    body = assert_error_shape(_call(simulator_server, "POST", f"/{IDENTITY}/events", token, json=event), 403)
    assert "scope.vora.identities" in body["message"]
    assert stream_length(redisdb) == 0


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        ({"type": "callExploded", "data": {"callId": "c-1"}}, "type"),
        ({"type": "callRinging", "data": {"direction": "inbound"}}, "callId"),
        ({"type": "presence", "data": {"status": "asleep"}}, "status"),
        ({"type": "callRinging", "data": {"callId": "c-1", "colour": "red"}}, "colour"),
        ({"type": "callRinging"}, "data"),
        ({"type": "callRinging", "data": {"callId": "c-1"}, "idempotencyKey": "k-1"}, "idempotencyKey"),
    ],
)
def test_a_bad_type_or_data_is_400_and_nothing_is_stored(
    simulator_server: RunningServer, redisdb: redis.Redis, make_token: TokenFactory, event: Any, fragment: str
) -> None:
    """An unknown type, data its schema refuses or a body this document does not describe is 400, and not stored."""
    _own(redisdb)
    response = _call(simulator_server, "POST", f"/{IDENTITY}/events", make_token("alice"), json=event)
    body = assert_error_shape(response, 400)
    assert fragment in body["message"]
    assert stream_length(redisdb) == 0


def test_a_body_over_the_limit_is_413(
    simulator_server: RunningServer, redisdb: redis.Redis, make_token: TokenFactory
) -> None:
    """A body larger than VORA_MAX_BODY_BYTES is refused 413 in the error shape, as the REST API refuses it."""
    _own(redisdb)
    event = {"type": "presence", "data": {"status": "busy", "note": "x" * (70 * 1024)}}
    response = _call(simulator_server, "POST", f"/{IDENTITY}/events", make_token("alice"), json=event)
    assert_error_shape(response, 413)
    assert stream_length(redisdb) == 0
