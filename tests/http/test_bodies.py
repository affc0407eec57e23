"""Request bodies on the real gunicorn, both ports: read only when wanted, within a deadline, 100 only before a read."""

from __future__ import annotations

import gzip
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from testbed.vora_server import RunningServer, running_server
from tests.harness.raw_http import assert_refused, raw_exchange, read_reply
from tests.harness.server_env import server_env
from tests.harness.tokens import TokenFactory
from vora.store import keys

pytestmark = pytest.mark.slow

READ_TIMEOUT = 30.0  # long: a pause in a body never reaches it here
BODY_TIMEOUT = 3.0
PROMPT = 10.0  # how long a test waits for an answer that must not wait for the body
BODY_LIMIT = 1024
SERVER_API_BODY_LIMIT = 4096
SERVER_KEY = "srv-bodies-key-0123456789abcdefghijklmnopqrstuvwxyz"
IDENTITY = "910111000"
PING = b"GET /vora/health/liveness HTTP/1.1\r\nHost: vora\r\n\r\n"
SETUP_BODY = b'{"connectionType": "WebSocket", "identity": "910111000"}'
EVENT_BODY = b'{"type": "presence", "data": {"status": "busy"}}'
PORTS = ["public", "server-api"]


@pytest.fixture(scope="module")
def server(
    redis_proc: Any, key_dir: Path, dev_key_pem: bytes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Serve VORA with one worker, a 30 s read timeout, a 3 s body deadline and small body limits."""
    env = server_env(
        redis_proc,
        key_dir,
        VORA_HTTP_READ_TIMEOUT=str(READ_TIMEOUT),
        VORA_HTTP_BODY_TIMEOUT=str(BODY_TIMEOUT),
        VORA_MAX_BODY_BYTES=str(BODY_LIMIT),
        VORA_SERVER_API_KEYS=SERVER_KEY,
        VORA_SERVER_API_MAX_BODY_BYTES=str(SERVER_API_BODY_LIMIT),
    )
    with running_server(env, tmp_path_factory.mktemp("bodies-server")) as running:
        yield running


def port_of(server: RunningServer, listener: str) -> int:
    """Return the port of the public listener or of the server API's."""
    return server.port if listener == "public" else server.server_api_port


def post_head(listener: str, authorization: str | None, length: int, *extra: str, target: str | None = None) -> bytes:
    """Build the head of a POST to the body-taking operation of a listener (or to target)."""
    default = "/vora/identity/setup" if listener == "public" else f"/vora/server/v1/identities/{IDENTITY}/events"
    lines = [f"POST {target or default} HTTP/1.1", "Host: vora", "Content-Type: application/json"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    lines += [f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def valid_authorization(listener: str, make_token: TokenFactory) -> str:
    """Return credentials the listener accepts."""
    return f"Bearer {make_token()}" if listener == "public" else f"Bearer {SERVER_KEY}"


def first_status_line(port: int, request: bytes) -> bytes:
    """Send a request and return the first status line the server answers, within PROMPT."""
    with socket.create_connection(("127.0.0.1", port), timeout=PROMPT) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.partition(b"\r\n")[0]


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="none"),
        pytest.param("Basic YWxpY2U6c2VjcmV0", id="not-bearer"),
        pytest.param("Bearer not-a-jwt!", id="malformed-bearer"),
    ],
)
@pytest.mark.parametrize("listener", PORTS)
def test_body_without_credentials_is_not_read(server: RunningServer, listener: str, authorization: str | None) -> None:
    """A body sent without credentials of the right form is answered 401 at once, unread, its connection closed."""
    if listener == "server-api" and authorization == "Bearer not-a-jwt!":
        authorization = "Bearer not a key"
    reply = raw_exchange(port_of(server, listener), post_head(listener, authorization, 100) + b"{", PROMPT)
    assert_refused(reply, 401)


@pytest.mark.parametrize(
    ("listener", "target", "statuses"),
    [
        pytest.param("public", f"/vora/logout/{IDENTITY}", {200, 403, 404}, id="public-logout"),
        pytest.param("public", "/vora/health/liveness", {405}, id="public-no-such-operation"),
        pytest.param("public", "/vora/nowhere", {404}, id="public-no-such-path"),
        pytest.param("server-api", f"/vora/server/v1/identities/{IDENTITY}/online", {405}, id="server-api-get-only"),
        pytest.param("server-api", "/vora/server/v1/nowhere", {404}, id="server-api-no-such-path"),
    ],
)
def test_body_an_operation_does_not_take_is_not_read(
    server: RunningServer, make_token: TokenFactory, listener: str, target: str, statuses: set[int]
) -> None:
    """With valid credentials, a body for an operation that takes none is answered at once, unread, and closes."""
    head = post_head(listener, valid_authorization(listener, make_token), 100, target=target)
    reply = raw_exchange(port_of(server, listener), head + b"{", PROMPT)
    assert reply.status in statuses, reply
    assert reply.headers["connection"] == "close"
    assert reply.closed


@pytest.mark.parametrize("listener", PORTS)
def test_trickled_body_gets_408_at_its_deadline_while_others_are_served(
    server: RunningServer, make_token: TokenFactory, listener: str
) -> None:
    """A body sent a byte every half second gets 408 at VORA_HTTP_BODY_TIMEOUT, and pings are answered meanwhile."""
    head = post_head(listener, valid_authorization(listener, make_token), 900)
    with socket.create_connection(("127.0.0.1", port_of(server, listener)), timeout=PROMPT) as sock:
        started = time.monotonic()
        sock.sendall(head)
        pings: list[int] = []
        while time.monotonic() - started < BODY_TIMEOUT + PROMPT:
            readable, _, _ = select.select([sock], [], [], 0.5)  # paces the bytes; stops once the server answers
            if readable:
                break
            sock.sendall(b" ")
            pings.append(raw_exchange(server.port, PING, PROMPT).status)  # the worker serves others meanwhile
        reply = read_reply(sock, PROMPT)
    assert_refused(reply, 408, "body did not arrive in time", f"{BODY_TIMEOUT:g} s")
    assert pings
    assert set(pings) == {204}


@pytest.mark.parametrize("listener", PORTS)
def test_expect_continue_is_not_answered_100_before_a_401(server: RunningServer, listener: str) -> None:
    """A client without credentials that waits on `Expect: 100-continue` gets the 401 first, not a 100."""
    request = post_head(listener, None, 50, "Expect: 100-continue")
    assert first_status_line(port_of(server, listener), request).startswith(b"HTTP/1.1 401 ")


@pytest.mark.parametrize("listener", PORTS)
def test_expect_continue_is_not_answered_100_before_a_413(
    server: RunningServer, make_token: TokenFactory, listener: str
) -> None:
    """A client that announces a body over the limit and waits on `Expect: 100-continue` gets the 413 first."""
    request = post_head(listener, valid_authorization(listener, make_token), 1 << 20, "Expect: 100-continue")
    assert first_status_line(port_of(server, listener), request).startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize("listener", PORTS)
def test_encoded_body_is_415_unread(server: RunningServer, make_token: TokenFactory, listener: str) -> None:
    """A body sent with Content-Encoding gzip is answered 415 naming the coding at once, unread, and closes."""
    body = gzip.compress(SETUP_BODY if listener == "public" else EVENT_BODY)
    head = post_head(listener, valid_authorization(listener, make_token), len(body) + 100, "Content-Encoding: gzip")
    reply = raw_exchange(port_of(server, listener), head + body, PROMPT)  # 100 bytes short: only an unread body ends
    assert_refused(reply, 415, "Content-Encoding 'gzip'")
    assert reply.headers["accept-encoding"] == "identity"


@pytest.mark.parametrize("listener", PORTS)
def test_transfer_coded_body_is_501_unread(server: RunningServer, make_token: TokenFactory, listener: str) -> None:
    """A body sent with Transfer-Encoding gzip, chunked is answered 501 naming the codings, unread, and closes."""
    body = gzip.compress(SETUP_BODY if listener == "public" else EVENT_BODY)
    head = post_head(listener, valid_authorization(listener, make_token), 0, "Transfer-Encoding: gzip, chunked")
    head = head.replace(b"Content-Length: 0\r\n", b"")
    chunk = b"%x\r\n%s\r\n" % (len(body), body)  # no last chunk: only an unread body ends the exchange
    reply = raw_exchange(port_of(server, listener), head + chunk, PROMPT)
    assert_refused(reply, 501, "Transfer-Encoding 'gzip, chunked'")


@pytest.mark.parametrize("listener", PORTS)
def test_identity_coded_body_is_served(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis, listener: str
) -> None:
    """Content-Encoding identity is no coding at all: the body is read and served."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    body = SETUP_BODY if listener == "public" else EVENT_BODY
    head = post_head(listener, valid_authorization(listener, make_token), len(body), "Content-Encoding: identity")
    assert raw_exchange(port_of(server, listener), head + body, PROMPT).status in {200, 202}


@pytest.mark.parametrize("listener", PORTS)
def test_expect_continue_is_answered_100_when_the_body_is_wanted(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis, listener: str
) -> None:
    """With credentials and a body within the limit, the server answers 100, reads the body, and serves it."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    body = SETUP_BODY if listener == "public" else EVENT_BODY
    head = post_head(listener, valid_authorization(listener, make_token), len(body), "Expect: 100-continue")
    with socket.create_connection(("127.0.0.1", port_of(server, listener)), timeout=PROMPT) as sock:
        sock.sendall(head)
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(1)  # byte by byte: nothing past the interim answer is consumed
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        reply = read_reply(sock, PROMPT)
    assert reply.status in {200, 202}, reply
