"""Tests of the gunicorn worker over raw loopback sockets: gunicorn's refusals in the VORA shape, bounded reads."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from gevent import socket as gevent_socket
from gunicorn.config import Config
from gunicorn.http.errors import InvalidHeader, LimitRequestLine
from gunicorn.http.parser import RequestParser

from testbed.vora_server import RunningServer, running_server
from testbed.wait import wait_for
from tests.harness.raw_http import assert_refused, raw_exchange, read_reply
from tests.harness.server_env import server_env
from tests.harness.tokens import TokenFactory
from vora.core.error_shape import RequestReadTimeout
from vora.http.worker import OneWriteResponse, TimedReads, refusal_of
from vora.store import keys

pytestmark = pytest.mark.slow

READ_TIMEOUT = 1.0
BODY_LIMIT = 1024
LISTEN_BACKLOG = 1000  # under net.core.somaxconn, which caps it
IDENTITY = "910111000"
SETUP_HEAD = "POST /vora/identity/setup HTTP/1.1\r\nHost: vora\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server(
    redis_proc: Any, key_dir: Path, dev_key_pem: bytes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Serve VORA with a 1 s read timeout and a 1 KiB body limit for the whole module."""
    env = server_env(
        redis_proc,
        key_dir,
        VORA_HTTP_READ_TIMEOUT=str(READ_TIMEOUT),
        VORA_MAX_BODY_BYTES=str(BODY_LIMIT),
        VORA_LISTEN_BACKLOG=str(LISTEN_BACKLOG),
    )
    with running_server(env, tmp_path_factory.mktemp("worker-server")) as running:
        yield running


def test_the_public_port_queues_listen_backlog_connections(server: RunningServer) -> None:
    """The public port's accept queue is VORA_LISTEN_BACKLOG long (ss shows a listener's queue as Send-Q)."""
    listing = subprocess.run(
        ["ss", "-Hltn", f"sport = :{server.port}"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.split()
    assert listing[0] == "LISTEN"
    assert int(listing[2]) == LISTEN_BACKLOG


def test_workers_boot_without_gevent_warning_of_unpatched_ssl(server: RunningServer) -> None:
    """Every module a worker may use is loaded after gevent patched ssl, so gevent has nothing to warn of."""
    assert "MonkeyPatchWarning" not in server.log()


def test_unpatched_ssl_users_names_modules_that_took_ssl_context_before_the_patch() -> None:
    """Modules that took or subclassed SSLContext before the patch are named; redis.asyncio and later ones are not."""
    code = """
import ssl, sys, types
for name, value in [("took_it", ssl.SSLContext), ("redis.asyncio.connection_like", ssl.SSLContext)]:
    module = types.ModuleType(name)
    module.SSLContext = value
    sys.modules[name] = module
del value  # __main__ would hold the class too
subclassed = types.ModuleType("subclassed_it")
subclassed.Context = type("Context", (ssl.SSLContext,), {})
sys.modules["subclassed_it"] = subclassed
from gevent import monkey
monkey.patch_all()
late = types.ModuleType("took_it_late")
late.SSLContext = ssl.SSLContext
sys.modules["took_it_late"] = late
from vora.http.worker import unpatched_ssl_users
print(unpatched_ssl_users())
"""
    result = subprocess.run(
        [sys.executable, "-W", "ignore::Warning", "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "['subclassed_it', 'took_it']"


def assert_no_traceback(server: RunningServer) -> None:
    """Check the server logged no traceback."""
    assert "Traceback" not in server.log()


def setup_request(token: str, body: bytes, framing: str) -> bytes:
    """Build a setup request with a Content-Length or chunked body."""
    head = f"{SETUP_HEAD}Authorization: Bearer {token}\r\n"
    if framing == "chunked":
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 500]), body[i : i + 500]) for i in range(0, len(body), 500)
        )
        return f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunks + b"0\r\n\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


GUNICORN_REFUSALS = [
    pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: vora\r\n\r\n", 414, id="request-line-over-limit"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: vora\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n", 431, id="64k-header"),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: vora\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(101)) + b"\r\n",
        431,
        id="101-headers",
    ),
    pytest.param(f"{SETUP_HEAD}Content-Length: -1\r\n\r\n".encode(), 400, id="content-length-minus-1"),
    pytest.param(f"{SETUP_HEAD}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}".encode(), 400, id="two-lengths"),
    pytest.param(
        f"{SETUP_HEAD}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(),
        400,
        id="length-and-te",
    ),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, id="tls-to-plain-http"),
]


@pytest.mark.parametrize(("request_bytes", "status"), GUNICORN_REFUSALS)
def test_gunicorn_refusals_answer_the_error_shape(server: RunningServer, request_bytes: bytes, status: int) -> None:
    """What gunicorn refuses before the app runs is answered as VORA JSON, not HTML, and logged without a traceback."""
    assert_refused(raw_exchange(server.port, request_bytes), status)
    assert_no_traceback(server)


def test_headers_never_finished_get_408(server: RunningServer) -> None:
    """A client that sends half a head and stops gets 408 and its connection closed."""
    reply = raw_exchange(server.port, b"GET /vora/health/liveness HTTP/1.1\r\nHost: vora\r\n")
    assert_refused(reply, 408, "did not arrive in time")


def test_headers_trickled_get_408(server: RunningServer) -> None:
    """A client that trickles its head a byte at a time gets 408 once the read timeout has passed in total."""
    head = b"GET /vora/health/liveness HTTP/1.1\r\nHost: vora\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        started = time.monotonic()
        for byte in head:
            sock.sendall(bytes([byte]))
            readable, _, _ = select.select([sock], [], [], 0.1)  # pace the bytes; stop once the server answers
            if readable:
                break
        assert_refused(read_reply(sock), 408)
        assert time.monotonic() - started < len(head) * 0.1  # refused before the head was complete


def test_body_never_sent_gets_408(server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis) -> None:
    """A client that promises a body and sends one byte of it gets 408, its connection closed, nothing created."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    request = f"{SETUP_HEAD}Authorization: Bearer {make_token()}\r\nContent-Length: 100\r\n\r\n{{".encode()
    assert_refused(raw_exchange(server.port, request), 408)
    assert redisdb.zcard(keys.sessions_index(IDENTITY)) == 0
    assert_no_traceback(server)


def test_kept_alive_connection_outlives_the_read_timeout(server: RunningServer) -> None:
    """Between requests a kept-alive connection waits longer than the read timeout and serves the next request."""
    request = b"GET /vora/health/liveness HTTP/1.1\r\nHost: vora\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(request)
        assert read_reply(sock).status == 204
        readable, _, _ = select.select([sock], [], [], READ_TIMEOUT * 2.5)
        assert not readable  # neither a 408 nor a close while idle
        sock.sendall(request)
        assert read_reply(sock).status == 204


BIG_ANSWER = b"GET /vora/ui/swagger-ui-bundle.js HTTP/1.1\r\nHost: vora\r\n\r\n"  # about 1 MB, no credentials


def reading_socket(port: int, receive_buffer: int) -> socket.socket:
    """Connect to a loopback port with a small receive buffer, so that an answer not read backs up to the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(15)
    sock.connect(("127.0.0.1", port))
    return sock


def drain(sock: socket.socket, pause: float = 0.0, size: int = 65536) -> bytes:
    """Read a connection until the server closes it, pausing between reads."""
    received = bytearray()
    while chunk := sock.recv(size):
        received += chunk
        time.sleep(pause)
    return bytes(received)


def test_a_client_that_stops_reading_its_answers_is_cut(server: RunningServer) -> None:
    """Pipelined requests for big answers that are never read are cut once the read timeout passes without progress."""
    with reading_socket(server.port, 4096) as sock:
        sock.sendall(BIG_ANSWER * 20)  # far more than the kernel buffers of both ends hold
        wait_for(lambda: "answer not taken" in server.log(), 10 * READ_TIMEOUT, what="the stalled answer to be cut")
        received = drain(sock)  # what the kernel had taken, then the close
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.count(b"HTTP/1.1 200 OK\r\n") < 20
    assert raw_exchange(server.port, b"GET /vora/health/liveness HTTP/1.1\r\nHost: vora\r\n\r\n").status == 204
    assert_no_traceback(server)


def test_a_client_reading_slowly_but_steadily_gets_every_answer(server: RunningServer) -> None:
    """A client that reads its pipelined answers in small steps, each within the read timeout, gets all of them."""
    # About 800 kB/s: the kernel's queue drains steadily, though too slowly to wake the writer within the timeout.
    requests = BIG_ANSWER * 2 + BIG_ANSWER.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    with reading_socket(server.port, 4096) as sock:
        sock.sendall(requests)
        started = time.monotonic()
        received = drain(sock, pause=READ_TIMEOUT / 100)
    length = int(received.partition(b"Content-Length: ")[2].partition(b"\r\n")[0])
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert len(received) > 3 * length
    assert time.monotonic() - started > 2 * READ_TIMEOUT  # slow enough that a writer waited past the timeout


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_body_over_the_limit_gets_413_and_creates_nothing(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis, framing: str
) -> None:
    """Setup JSON padded past VORA_MAX_BODY_BYTES is a 413 that closes the connection, chunked or not."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    body = b'{"connectionType": "WebSocket", "identity": "910111000"}' + b" " * (BODY_LIMIT * 10)
    assert_refused(raw_exchange(server.port, setup_request(make_token(), body, framing)), 413, str(BODY_LIMIT))
    assert redisdb.zcard(keys.sessions_index(IDENTITY)) == 0


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_body_within_the_limit_is_served(
    server: RunningServer, make_token: TokenFactory, redisdb: redis.Redis, framing: str
) -> None:
    """A setup body under the limit, chunked or not, opens a session."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    body = b'{"connectionType": "WebSocket", "identity": "910111000"}' + b" " * 600
    reply = raw_exchange(server.port, setup_request(make_token(), body, framing))
    assert reply.status == 200, reply
    assert "webSocketToken" in reply.json()
    assert redisdb.zcard(keys.sessions_index(IDENTITY)) == 1


def test_malformed_chunk_gets_400(server: RunningServer, make_token: TokenFactory) -> None:
    """A chunked body with a chunk size that is not hexadecimal is a 400 in the error shape."""
    request = f"{SETUP_HEAD}Authorization: Bearer {make_token()}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".encode()
    assert_refused(raw_exchange(server.port, request), 400, "could not be read")
    assert_no_traceback(server)


def test_unexpected_errors_are_500_and_parse_errors_map_to_statuses() -> None:
    """Refusals map gunicorn's parse errors to statuses; anything else is not a refusal (a logged 500)."""
    assert refusal_of(LimitRequestLine(9000, 4094)) == (
        414,
        "The request line is too long: " + str(LimitRequestLine(9000, 4094)),
    )
    header_refusal = refusal_of(InvalidHeader("X" * 500))
    assert header_refusal is not None
    assert header_refusal[0] == 400
    assert refusal_of(RuntimeError("boom")) is None


def test_timed_reads_bound_each_phase() -> None:
    """The head has one deadline from accept, a body a bound per pause, and the wait between requests none."""
    left, right = gevent_socket.socketpair()  # a gevent socket, as gunicorn's worker hands out
    with left, right:
        reads = TimedReads(left, 0.2)
        with pytest.raises(RequestReadTimeout):
            reads.recv(10)
        reads.between_requests()
        right.sendall(b"GET")
        assert reads.recv(10) == b"GET"  # the first byte of a request starts its head's clock
        with pytest.raises(RequestReadTimeout):
            reads.recv(10)


class CountedSends:
    """A real socket whose sendall calls are counted: each is one write, one packet with TCP_NODELAY."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        """Send data and note the write."""
        self.writes.append(data)
        self.sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _response(request: bytes) -> tuple[OneWriteResponse, CountedSends, socket.socket]:
    """Parse a request from a real socket pair with gunicorn's parser; answer it on the other end."""
    server_side, client_side = socket.socketpair()
    client_side.sendall(request)
    parsed = next(RequestParser(Config(), server_side, ("127.0.0.1", 1)))
    counted = CountedSends(server_side)
    return OneWriteResponse(parsed, counted, Config()), counted, client_side


@pytest.mark.parametrize(
    ("headers", "chunks", "writes"),
    [
        ([("Content-Length", "2")], [b"{}"], 1),  # a JSON answer: head and body in one write
        ([], [b"", b"data: 1\n\n"], 3),  # a stream: its empty first chunk still sends the head at once
        ([("Content-Length", "0")], [], 1),  # no body: the head alone, at close
        ([("Content-Length", "6")], [b"abc", b"def"], 2),  # the head rides with the first chunk only
    ],
)
def test_a_response_head_goes_out_with_its_first_body_write(
    headers: list[tuple[str, str]], chunks: list[bytes], writes: int
) -> None:
    """Gunicorn's two writes (head, then body) of an answer are one; every byte is still sent by each write's end."""
    response, counted, client_side = _response(b"GET /x HTTP/1.1\r\nHost: vora\r\n\r\n")
    with client_side, counted.sock:
        response.start_response("200 OK", headers)
        for chunk in chunks:
            response.write(chunk)
            assert counted.writes  # nothing is held after a write
        response.close()
        sent = b"".join(counted.writes)
        assert len(counted.writes) == writes
        assert sent.startswith(b"HTTP/1.1 200 OK\r\n")
        assert client_side.recv(65536) == sent


def test_a_worker_at_its_open_file_limit_pauses_accepting_and_says_so(
    redis_proc: Any, key_dir: Path, dev_key_pem: bytes, tmp_path: Path
) -> None:
    """A worker out of file descriptors logs one clear warning per pause (no traceback) and serves again once freed."""
    with running_server(server_env(redis_proc, key_dir), tmp_path) as served:
        (pid,) = served.worker_pids()
        worker = psutil.Process(pid)
        soft, hard = worker.rlimit(psutil.RLIMIT_NOFILE)
        worker.rlimit(psutil.RLIMIT_NOFILE, (worker.num_fds() + 4, hard))
        held = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(12)]
        try:
            wait_for(lambda: "accept paused" in served.log_path.read_text(), 10, what="the accept pause warning")
        finally:
            for sock in held:
                sock.close()
        worker.rlimit(psutil.RLIMIT_NOFILE, (soft, hard))
        reply = raw_exchange(served.port, b"GET /vora/health/liveness HTTP/1.1\r\nHost: vora\r\n\r\n")
        log = served.log_path.read_text()
    assert reply.status == 204
    paused = [line for line in log.splitlines() if "accept paused" in line]
    assert paused
    assert all('"level": "warning"' in line and "EMFILE" in line for line in paused), paused[:2]
    assert "greenlet failed" not in log
