"""Hostile HTTP/1.1 framing against the real gunicorn on both ports: prompt refusals, a worker no one holds."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from testbed.vora_server import RunningServer, running_server
from tests.harness.raw_http import RawReply, assert_refused, raw_exchange, read_reply
from tests.harness.server_env import server_env
from tests.harness.tokens import TokenFactory
from vora.store import keys

pytestmark = pytest.mark.slow

READ_TIMEOUT = 30.0  # long: every answer below must come well before it
PROMPT = 10.0  # how long a test waits for an answer that must not wait for the read timeout
BODY_LIMIT = 16 * 1024
SERVER_API_BODY_LIMIT = 64 * 1024
SERVER_KEY = "srv-framing-key-0123456789abcdefghijklmnopqrstuvwxyz"
IDENTITY = "910111000"
# Credentials of the right form, which the server reads a body for before it verifies them.
FORGED_TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmVkIGJ5IG5vYm9keQ"
FORGED_KEY = "srv-not-a-configured-key"
PING = b"GET /vora/health/liveness HTTP/1.1\r\nHost: vora\r\n\r\n"
HOSTILE_SIZE = 2 * 1024 * 1024  # what a hostile client sends at most: bounded, so the suite stays fast
PIECE = 64 * 1024
CHUNK_LINE_LIMIT = 4096  # the bounds docs/operations.md documents
TRAILERS_LIMIT = 8192


@pytest.fixture(scope="module")
def server(
    redis_proc: Any, key_dir: Path, dev_key_pem: bytes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Serve VORA with one worker, a 30 s read timeout and small body limits on both ports."""
    env = server_env(
        redis_proc,
        key_dir,
        VORA_HTTP_READ_TIMEOUT=str(READ_TIMEOUT),
        VORA_MAX_BODY_BYTES=str(BODY_LIMIT),
        VORA_SERVER_API_KEYS=SERVER_KEY,
        VORA_SERVER_API_MAX_BODY_BYTES=str(SERVER_API_BODY_LIMIT),
    )
    with running_server(env, tmp_path_factory.mktemp("framing-server")) as running:
        yield running


PORTS = ["public", "server-api"]


def port_of(server: RunningServer, listener: str) -> int:
    """Return the port of the public listener or of the server API's."""
    return server.port if listener == "public" else server.server_api_port


def chunked_head(listener: str, credentials: str | None = None) -> bytes:
    """Build the head of a chunked POST to an operation that takes a body, with credentials of the right form."""
    if listener == "public":
        target, credentials = "/vora/identity/setup", credentials or FORGED_TOKEN
    else:
        target, credentials = f"/vora/server/v1/identities/{IDENTITY}/events", credentials or FORGED_KEY
    return (
        f"POST {target} HTTP/1.1\r\nHost: vora\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {credentials}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()


def prompt_exchange(port: int, request: bytes) -> RawReply:
    """Send raw bytes and await the answer for PROMPT seconds, far less than the read timeout."""
    return raw_exchange(port, request, deadline_s=PROMPT)


def flood(port: int, opening: bytes, filler: bytes, pinged: threading.Event, ping_port: int) -> RawReply:
    """Send an opening, then filler at full speed until the server stops reading, pinging meanwhile; read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=PROMPT) as sock:
        with contextlib.suppress(OSError):  # the server refuses, and closes, before it has read everything
            sock.sendall(opening)
            for sent in range(0, HOSTILE_SIZE, PIECE):
                sock.sendall(filler * (PIECE // len(filler)))
                if sent == PIECE and raw_exchange(ping_port, PING, deadline_s=PROMPT).status == 204:
                    pinged.set()  # the worker served another connection while this one was sending
        return read_reply(sock, PROMPT)


@pytest.mark.parametrize("listener", PORTS)
def test_endless_chunk_extension_is_a_prompt_400(server: RunningServer, listener: str) -> None:
    """A chunk-size line whose extension never ends is a 400 once it passes its bound, the worker serving others."""
    pinged = threading.Event()
    reply = flood(port_of(server, listener), chunked_head(listener) + b"5;e=", b"x", pinged, server.port)
    assert_refused(reply, 400, "chunk-size line", str(CHUNK_LINE_LIMIT))
    assert pinged.is_set() or raw_exchange(server.port, PING).status == 204


@pytest.mark.parametrize("listener", PORTS)
def test_chunk_size_with_endless_leading_zeros_is_a_prompt_400(server: RunningServer, listener: str) -> None:
    """Leading zeros count in the chunk-size line's bound: a megabyte of them is a 400, though a valid chunk follows."""
    request = chunked_head(listener) + b"0" * (1024 * 1024) + b"5\r\nhello\r\n0\r\n\r\n"
    assert_refused(prompt_exchange(port_of(server, listener), request), 400, "chunk-size line")


@pytest.mark.parametrize(
    "trailers",
    [
        pytest.param(b"X-Trailer: " + b"a" * (1024 * 1024), id="one-endless-field"),
        pytest.param(b"X-Trailer: a\r\n" * 20_000, id="endless-fields"),
    ],
)
@pytest.mark.parametrize("listener", PORTS)
def test_endless_trailer_section_is_a_prompt_400(server: RunningServer, listener: str, trailers: bytes) -> None:
    """A trailer section that never ends is a 400 once it passes its bound."""
    request = chunked_head(listener) + b"5\r\nhello\r\n0\r\n" + trailers
    assert_refused(prompt_exchange(port_of(server, listener), request), 400, "trailer section", str(TRAILERS_LIMIT))


@pytest.mark.parametrize("listener", PORTS)
def test_chunk_size_past_64_bits_is_a_prompt_400(server: RunningServer, listener: str) -> None:
    """A chunk size of 64 hex digits is malformed at once, not a chunk the server waits for."""
    request = chunked_head(listener) + b"f" * 64 + b"\r\nhello"
    assert_refused(prompt_exchange(port_of(server, listener), request), 400, "significant hex digits")


@pytest.mark.parametrize("listener", PORTS)
def test_chunk_size_past_the_body_limit_is_a_prompt_413(server: RunningServer, listener: str) -> None:
    """A chunk that declares more than the body limit is a 413 before its data is awaited."""
    request = chunked_head(listener) + b"ffffffffffffffff\r\nhello"
    limit = BODY_LIMIT if listener == "public" else SERVER_API_BODY_LIMIT
    assert_refused(prompt_exchange(port_of(server, listener), request), 413, str(limit))


@pytest.mark.parametrize("listener", PORTS)
def test_chunk_size_line_ending_in_a_bare_lf_is_a_prompt_400(server: RunningServer, listener: str) -> None:
    """A chunk-size line ended by LF alone is malformed at once, not a line the server waits to see end."""
    request = chunked_head(listener) + b"5\nhello"
    assert_refused(prompt_exchange(port_of(server, listener), request), 400, "bare LF")


@pytest.mark.parametrize("listener", PORTS)
def test_framing_counts_against_the_body_limit(server: RunningServer, listener: str) -> None:
    """One-byte chunks with long extensions are a 413 once data and framing pass the limit together."""
    chunk = b"1;pad=" + b"p" * 1000 + b"\r\n{\r\n"
    limit = BODY_LIMIT if listener == "public" else SERVER_API_BODY_LIMIT
    request = chunked_head(listener) + chunk * (limit // 1000 + 1) + b"0\r\n\r\n"
    assert_refused(prompt_exchange(port_of(server, listener), request), 413, str(limit))


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /vora/health/liveness HTTP/1.1\nHost: vora\n\n", id="request-line"),
        pytest.param(b"GET /vora/health/liveness HTTP/1.1\r\nHost: vora\n\n", id="header-field"),
        pytest.param(b"GET /vora/health/liveness HTTP/1.1\r\nHost: vora\r\nX-A: b\n", id="header-field-unfinished"),
    ],
)
@pytest.mark.parametrize("listener", PORTS)
def test_bare_lf_in_the_head_is_a_prompt_400(server: RunningServer, listener: str, request_bytes: bytes) -> None:
    """A head whose lines end in LF alone is a 400 at once, not a 408 after the read timeout."""
    assert_refused(prompt_exchange(port_of(server, listener), request_bytes), 400, "bare LF")


def test_extensions_and_trailers_within_bounds_are_served(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis
) -> None:
    """A chunked setup with a chunk extension and a trailer field, each within its bound, opens a session."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    body = b'{"connectionType": "WebSocket", "identity": "910111000"}'
    request = chunked_head("public", make_token()) + b"%x;name=value\r\n%s\r\n0\r\nX-Checksum: abc\r\n\r\n" % (
        len(body),
        body,
    )
    reply = prompt_exchange(server.port, request)
    assert reply.status == 200, reply
    assert redisdb.zcard(keys.sessions_index(IDENTITY)) == 1


def test_a_connection_pipelining_requests_lets_the_worker_serve_others(server: RunningServer) -> None:
    """While one connection keeps the worker busy with pipelined requests, another connection's ping is answered."""
    count, mark = 2_000, b"HTTP/1.1 204"
    answered = [0]
    flood_served = threading.Event()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as flooder:

        def read_answers() -> None:
            carry = b""
            while answered[0] < count:
                chunk = flooder.recv(1 << 20)
                if not chunk:
                    return
                data = carry + chunk
                answered[0] += data.count(mark)
                carry = data[-(len(mark) - 1) :]  # too short to hold a whole mark: none is counted twice
                flood_served.set()

        reader = threading.Thread(target=read_answers)
        reader.start()
        flooder.sendall(PING * count)
        assert flood_served.wait(PROMPT)
        ping = raw_exchange(server.port, PING, deadline_s=PROMPT)
        served_meanwhile = answered[0]
        reader.join(timeout=60)
    assert ping.status == 204
    assert answered[0] == count
    assert served_meanwhile < count  # the ping did not wait for the whole flood


def test_a_request_pipelined_after_a_chunked_body_with_trailers_is_served(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis
) -> None:
    """What follows a chunked body's trailer section on the connection is the next request, and it is served."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    body = b'{"connectionType": "WebSocket", "identity": "910111000"}'
    chunked = chunked_head("public", make_token()) + b"%x\r\n%s\r\n0\r\nX-Checksum: abc\r\n\r\n" % (len(body), body)
    with socket.create_connection(("127.0.0.1", server.port), timeout=PROMPT) as sock:
        sock.sendall(chunked + PING)
        answers = b""
        while b"HTTP/1.1 204 " not in answers:  # both answers may come in one read
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk
    assert answers.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("listener", PORTS)
def test_malformed_trailer_field_is_a_400(server: RunningServer, listener: str) -> None:
    """A trailer line that is not a field is a 400 in the error shape, logged without a traceback."""
    request = chunked_head(listener) + b"5\r\nhello\r\n0\r\nnot a field\r\n\r\n"
    assert_refused(prompt_exchange(port_of(server, listener), request), 400)
    assert "Traceback" not in server.log()
