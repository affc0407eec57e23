"""Tests of what only the Server-Sent Events stream has: its framing, Last-Event-ID, retry, refusals, CORS, caps."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
import requests

from testbed.ports import free_port
from testbed.vora_server import RunningServer, running_server
from tests.harness.server_env import server_env
from tests.harness.ws_client import EventStreamRefused, assert_error_shape, open_client, open_event_stream
from tests.harness.ws_server import IDENTITY, ServerFactory
from vora.app import create_app
from vora.core.settings import Settings
from vora.events.publisher import EventPublisher
from vora.store import keys
from vora.ws.event_stream import RETRY_MIN_MS, event_stream_message, padding_comment, retry_field

pytestmark = [pytest.mark.slow, pytest.mark.ws]

Setup = Callable[..., str]

UNKNOWN_TOKEN = "v1.bm9wZQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # well formed, never issued


def test_stream_events_carry_their_id_and_lifecycle_events_none() -> None:
    """A stream event is framed with `id:` (EventSource's Last-Event-ID); a lifecycle event without one."""
    assert event_stream_message('{"a": 1}', "5-1") == b'id: 5-1\ndata: {"a": 1}\n\n'
    assert event_stream_message('{"a": 1}', None) == b'data: {"a": 1}\n\n'


@pytest.mark.parametrize("size", [3, 4096, 10_240])
def test_padding_is_one_comment_of_the_size_asked(size: int) -> None:
    """VORA_SSE_PADDING bytes become one comment line, which EventSource and both SDKs skip; 0 sends nothing."""
    padding = padding_comment(size)
    assert len(padding) == size
    assert padding.startswith(b":")
    assert padding.endswith(b"\n\n")
    assert b"\n" not in padding[:-2]
    assert padding_comment(0) == b""


def test_retry_is_drawn_over_the_window() -> None:
    """The reconnect delay is spread from 0.5 s over the whole window, never outside it."""
    rng = random.Random(5)
    delays = [int(retry_field(20, rng).decode().split()[1]) for _ in range(500)]
    assert min(delays) >= RETRY_MIN_MS
    assert max(delays) <= 20_000
    assert max(delays) - min(delays) > 15_000


def test_last_event_id_header_resumes_and_wins_over_the_query(
    server: RunningServer, setup_token: Setup, publisher: EventPublisher
) -> None:
    """EventSource's reconnect sends Last-Event-ID to its first URL: the header, newer, decides where it resumes."""
    token = setup_token(server)
    first = publisher.publish(IDENTITY, "callRinging", {"callId": "c-1"})
    second = publisher.publish(IDENTITY, "callRinging", {"callId": "c-2"})
    third = publisher.publish(IDENTITY, "callRinging", {"callId": "c-3"})
    client = open_event_stream(
        server.base_url, token, last_event_id=first.event_id, header_last_event_id=second.event_id
    )
    try:
        assert client.next()["eventId"] == third.event_id
        assert client.last_event_id == third.event_id
        assert client.retry_ms is not None
    finally:
        client.close()


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"token": "v1.bm9wZQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, 401),
        ({"token": None}, 401),
        ({"lastEventId": "99999999999999999999999-0"}, 400),
        ({"origin": "http://evil.example"}, 403),
        ({"extra": "1"}, 400),
    ],
)
def test_refusals_come_before_the_stream_in_the_error_shape(
    server: RunningServer, setup_token: Setup, change: dict[str, str | None], status: int
) -> None:
    """A bad token, position, Origin or query is answered with the error shape, never a stream."""
    params = {"token": setup_token(server)}
    headers = {"Accept": "text/event-stream"}
    for name, value in change.items():
        if name == "origin" and value is not None:
            headers["Origin"] = value
        elif value is None:
            params.pop(name)
        else:
            params[name] = value
    response = requests.get(f"{server.base_url}/sse", params=params, headers=headers, timeout=10)
    assert_error_shape(response, status)


def test_an_allowed_page_of_another_origin_gets_cors_headers(
    make_server: ServerFactory, setup_token: Setup, redisdb: redis.Redis
) -> None:
    """A page from a VORA_CORS_ORIGINS origin opens the stream and may read it (Access-Control-Allow-Origin)."""
    with make_server(cors_origins="http://app.example") as server:
        token = setup_token(server)
        client = open_event_stream(server.base_url, token, headers={"Origin": "http://app.example"})
        client.close()
        response = requests.get(
            f"{server.base_url}/sse",
            params={"token": token},
            headers={"Origin": "http://app.example"},
            timeout=10,
            stream=True,
        )
        try:
            assert response.status_code == 200
            assert response.headers["Access-Control-Allow-Origin"] == "http://app.example"
            assert response.headers["Cache-Control"] == "no-store"
            assert response.headers["X-Accel-Buffering"] == "no"
        finally:
            response.close()


def test_head_answers_what_get_would_and_admits_nothing(
    server: RunningServer, setup_token: Setup, redisdb: redis.Redis
) -> None:
    """HEAD gets the stream's head alone for a live token and GET's refusal otherwise, and attaches nothing."""
    token = setup_token(server)
    answers = {
        "live": requests.head(f"{server.base_url}/sse", params={"token": token}, timeout=10),
        "no-token": requests.head(f"{server.base_url}/sse", timeout=10),
        "unknown": requests.head(f"{server.base_url}/sse", params={"token": UNKNOWN_TOKEN}, timeout=10),
        "position": requests.head(
            f"{server.base_url}/sse", params={"token": token, "lastEventId": "not-an-id"}, timeout=10
        ),
        "origin": requests.head(
            f"{server.base_url}/sse", params={"token": token}, headers={"Origin": "http://evil.example"}, timeout=10
        ),
    }
    assert {name: answer.status_code for name, answer in answers.items()} == {
        "live": 200,
        "no-token": 401,
        "unknown": 401,
        "position": 400,
        "origin": 403,
    }
    live = answers["live"]
    assert live.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert live.headers["Cache-Control"] == "no-store"
    assert live.content == b""
    assert "Content-Length" not in live.headers  # its GET streams until it ends: no length to announce
    assert answers["unknown"].headers["WWW-Authenticate"].startswith("Bearer")
    [session_id] = redisdb.zrange(keys.sessions_index(IDENTITY), 0, -1)  # type: ignore[misc] # redis-py types sync replies as Awaitable | Any
    assert not redisdb.hexists(keys.session(IDENTITY, session_id.decode()), "attachedAt")
    assert "Traceback" not in server.log()


def test_head_without_redis_is_a_503_with_retry_after(settings: Settings) -> None:
    """With Redis unreachable, HEAD on the stream answers the 503 a GET's admission would, with Retry-After."""
    dead = create_app(settings.with_changes(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.2))
    response = dead.test_client().head("/vora/sse", query_string={"token": UNKNOWN_TOKEN})
    assert response.status == "503 Service Unavailable"
    assert response.headers["Retry-After"] == "1"


def test_a_malformed_token_is_a_401_even_with_redis_unreachable(
    key_dir: Path, dev_key_pem: bytes, jwks_path: Path, tmp_path: Path
) -> None:
    """With Redis unreachable, a token no session can hold is a 401 on GET and HEAD of both paths; a sound one a 503."""
    unreachable = SimpleNamespace(host="127.0.0.1", port=free_port())  # no Redis listens there
    env = server_env(unreachable, key_dir, jwks_path, VORA_WS_ACCEPT_TIMEOUT="0.5", VORA_REDIS_TIMEOUT="0.2")
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    with running_server(env, tmp_path) as server:
        for method in ("GET", "HEAD"):
            for path, headers in (("/sse", {}), ("/ws", upgrade)):
                url = f"{server.base_url}{path}"
                malformed = requests.request(method, url, params={"token": "not-a-token"}, headers=headers, timeout=10)
                assert malformed.status_code == 401, (method, path, malformed.status_code)
                assert 'error="invalid_token"' in malformed.headers["WWW-Authenticate"]
                if method == "GET":
                    assert_error_shape(malformed, 401)
                    assert malformed.json()["message"].startswith("The webSocketToken is unknown")
                sound = requests.request(method, url, params={"token": UNKNOWN_TOKEN}, headers=headers, timeout=10)
                assert sound.status_code == 503, (method, path, sound.status_code)


def test_the_per_session_cap_counts_sockets_and_streams_together(
    make_server: ServerFactory, setup_token: Setup
) -> None:
    """With a cap of 2, one socket and one stream fill it: a third connection of either kind is refused 429."""
    with make_server(ws_max_sockets_per_session="2") as server:
        token = setup_token(server)
        socket_client = open_client(server.ws_url, token)
        stream_client = open_event_stream(server.base_url, token)
        try:
            with pytest.raises(EventStreamRefused) as refused:
                open_event_stream(server.base_url, token)
            assert refused.value.status_code == 429
            response = requests.get(
                server.ws_url.replace("ws://", "http://"),
                params={"token": token},
                headers={
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
                timeout=10,
            )
            assert_error_shape(response, 429)
        finally:
            socket_client.close()
            stream_client.close()


def test_an_open_stream_counts_as_online(make_server: ServerFactory, setup_token: Setup) -> None:
    """The server API says an identity with only an event stream open is online, and lists its socket."""
    key = "sse-test-server-key-0123456789abcdefghijklmnop"
    with make_server(server_api_keys=key) as server:
        token = setup_token(server)
        client = open_event_stream(server.base_url, token)
        try:
            online = requests.get(
                f"{server.server_api_url}/identities/{IDENTITY}/online",
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert online.status_code == 200, online.text
            assert online.json()["online"] is True
        finally:
            client.close()


def test_setup_accepts_server_sent_events(
    server: RunningServer, make_token: Callable[..., str], redisdb: redis.Redis
) -> None:
    """Setup accepts connectionType ServerSentEvents, and its token opens the stream."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    response = requests.post(
        f"{server.base_url}/identity/setup",
        json={"connectionType": "ServerSentEvents", "identity": IDENTITY},
        headers={"Authorization": f"Bearer {make_token('alice')}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    client = open_event_stream(server.base_url, response.json()["webSocketToken"])
    client.close()
