"""Tests of the socket lifecycle: refusal, logout everywhere, eviction, expiry, pings, drain, slow consumers."""

from __future__ import annotations

import base64
import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests
import websocket

from testbed.vora_server import RunningServer
from testbed.wait import wait_for
from tests.harness.tokens import TokenFactory
from tests.harness.ws_client import EventClient, bearer, open_client, open_event_stream
from tests.harness.ws_server import IDENTITY, ServerFactory
from vora.events.publisher import EventPublisher
from vora.sessions.service import hash_token
from vora.store import keys
from vora.store.sessions import SessionStore

pytestmark = [pytest.mark.slow, pytest.mark.ws]

Connect = Callable[..., EventClient]


Setup = Callable[..., str]


def refused_status(url: str, headers: list[str] | None = None) -> tuple[int, bytes]:
    """Try to open a socket and return the HTTP status and body it was refused with."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=5, header=headers or [])
    return refused.value.status_code, refused.value.resp_body or b""


class TestRefusal:
    """Sockets that must not open."""

    def test_unknown_token_is_refused_with_401(self, server: RunningServer) -> None:
        """A well-formed but unknown token gets HTTP 401 before the upgrade, in the error shape."""
        fake = "v1." + base64.urlsafe_b64encode(IDENTITY.encode()).decode().rstrip("=") + "." + "A" * 43
        status, body = refused_status(f"{server.ws_url}?token={fake}")
        assert status == 401
        assert b'"status": "401"' in body
        assert b"unknown, expired or revoked" in body

    @pytest.mark.parametrize("token", ["garbage", "v1.x.y", "", "v1.OTEw.short"])
    def test_malformed_or_missing_token_is_refused(self, server: RunningServer, token: str) -> None:
        """A malformed or missing token gets HTTP 401."""
        assert refused_status(f"{server.ws_url}?token={token}")[0] == 401

    def test_revoked_token_is_refused(
        self, server: RunningServer, setup_token: Setup, make_token: TokenFactory
    ) -> None:
        """After logout the same token gets HTTP 401."""
        token = setup_token(server)
        requests.post(f"{server.base_url}/logout/{IDENTITY}", headers=bearer(make_token), timeout=5).raise_for_status()
        assert refused_status(f"{server.ws_url}?token={token}")[0] == 401

    def test_expired_token_is_refused(self, server: RunningServer, setup_token: Setup, redisdb: redis.Redis) -> None:
        """Once the session's TTL runs out the token gets HTTP 401."""
        token = setup_token(server)
        token_key = keys.websocket_token(IDENTITY, hash_token(token))
        redisdb.pexpire(token_key, 1)
        deadline = time.monotonic() + 5
        while redisdb.exists(token_key) and time.monotonic() < deadline:
            redisdb.ping()  # a round trip lets Redis' expiry catch up; bounded by the deadline
        assert refused_status(f"{server.ws_url}?token={token}")[0] == 401

    def test_bad_last_event_id_and_extra_parameters_are_400(self, server: RunningServer, setup_token: Setup) -> None:
        """A malformed lastEventId or an unknown query parameter gets HTTP 400."""
        token = setup_token(server)
        assert refused_status(f"{server.ws_url}?token={token}&lastEventId=yesterday")[0] == 400
        assert refused_status(f"{server.ws_url}?token={token}&debug=1")[0] == 400

    def test_plain_http_get_is_400(self, server: RunningServer, setup_token: Setup) -> None:
        """A GET without an upgrade gets 400 in the error shape."""
        response = requests.get(f"{server.base_url}/ws?token={setup_token(server)}", timeout=5)
        assert response.status_code == 400
        assert response.json()["message"] == "This endpoint only accepts WebSocket upgrades"

    def test_token_never_reaches_the_server_log(
        self, server: RunningServer, setup_token: Setup, connect_either: Connect
    ) -> None:
        """The WebSocket token in the query string is not in the access log or anywhere else."""
        token = setup_token(server)
        connect_either(server, token).close()
        refused_status(f"{server.ws_url}?token={token}x")
        log = server.log()
        assert "/vora/ws" in log
        assert token not in log
        assert token.rsplit(".", 1)[1] not in log


class TestTermination:
    """Sockets the server closes, and why."""

    def test_logout_on_one_instance_closes_the_socket_on_another(
        self,
        make_server: ServerFactory,
        setup_token: Setup,
        connect_either: Connect,
        make_token: TokenFactory,
    ) -> None:
        """Setup on A, socket on B, logout on A: B sends channelTerminated(logout) and closes with 1000."""
        with make_server() as a, make_server() as b:
            token = setup_token(a)
            client = connect_either(b, token)
            started = time.monotonic()
            response = requests.post(f"{a.base_url}/logout/{IDENTITY}", headers=bearer(make_token), timeout=5)
            assert response.status_code == 200
            event = client.next(timeout=5)
            elapsed = time.monotonic() - started
            assert event["type"] == "channelTerminated"
            assert event["data"] == {"reason": "logout"}
            assert client.close_status() == 1000
            print(f"logout reached the other instance's socket in {elapsed * 1000:.1f} ms")

    def test_eviction_sends_replaced(
        self, make_server: ServerFactory, setup_token: Setup, connect_either: Connect
    ) -> None:
        """A session evicted by the per-identity cap gets channelTerminated(replaced)."""
        with make_server(max_sessions_per_identity="1") as server:
            client = connect_either(server, setup_token(server))
            setup_token(server)
            event = client.next()
            assert event["type"] == "channelTerminated"
            assert event["data"]["reason"] == "replaced"
            assert client.close_status() == 1000

    def test_max_age_sends_token_expired(
        self, make_server: ServerFactory, setup_token: Setup, connect_either: Connect, redisdb: redis.Redis
    ) -> None:
        """A session past VORA_SESSION_MAX_AGE is ended with channelTerminated(tokenExpired)."""
        with make_server(session_ttl="2", session_max_age="2", ws_lease_interval="0.3") as server:
            token = setup_token(server)
            client = connect_either(server, token)
            event = client.next(timeout=10)
            assert event["data"] == {"reason": "tokenExpired"}
            assert not redisdb.exists(keys.websocket_token(IDENTITY, hash_token(token)))

    def test_open_socket_keeps_its_session_alive(
        self,
        make_server: ServerFactory,
        setup_token: Setup,
        connect_either: Connect,
        redisdb: redis.Redis,
        publisher: EventPublisher,
    ) -> None:
        """While a socket is open the session's TTL is renewed, so it outlives its idle TTL."""
        with make_server(session_ttl="2", ws_lease_interval="0.3") as server:
            token = setup_token(server)
            client = connect_either(server, token)
            token_key = keys.websocket_token(IDENTITY, hash_token(token))
            first_deadline = redisdb.pttl(token_key)
            # Wait on the lease itself: the TTL goes back up when the hub renews it.
            deadline = time.monotonic() + 10
            renewed = False
            while time.monotonic() < deadline and not renewed:
                event = publisher.publish(IDENTITY, "presence", {"status": "busy"})
                assert client.next()["eventId"] == event.event_id
                renewed = redisdb.pttl(token_key) > first_deadline  # type: ignore[operator] # redis-py types sync replies as Awaitable | Any
            assert renewed
            publisher.publish(IDENTITY, "presence", {"status": "away"})
            assert client.next()["data"] == {"status": "away"}

    def test_revoking_an_identity_sends_revoked(
        self, server: RunningServer, setup_token: Setup, connect_either: Connect, ws_env: dict[str, str]
    ) -> None:
        """`vora identities remove` ends the user's sessions and their sockets hear reason revoked."""
        client = connect_either(server, setup_token(server))
        subprocess.run(
            [sys.executable, "-m", "vora.cli", "identities", "remove", "alice", IDENTITY],
            env={**os.environ, **ws_env},
            check=True,
            capture_output=True,
        )
        assert client.next()["data"] == {"reason": "revoked"}

    def test_ping_timeout_closes_a_dead_client(self, make_server: ServerFactory, setup_token: Setup) -> None:
        """A client that never answers pings is closed with 1008 after one ping interval."""
        with make_server(ws_ping_interval="0.5") as server:
            ws = websocket.create_connection(f"{server.ws_url}?token={setup_token(server)}", timeout=10)
            pings = 0
            while True:
                frame = ws.recv_frame()  # raw frames: this client never answers a ping
                if frame.opcode == websocket.ABNF.OPCODE_PING:
                    pings += 1
                    continue
                if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                    assert int.from_bytes(frame.data[:2], "big") == 1008
                    break
            assert pings >= 1
            ws.close()

    def test_oversized_client_message_closes_with_1009(self, server: RunningServer, setup_token: Setup) -> None:
        """A client message over VORA_WS_MAX_MESSAGE_BYTES (4 KiB) closes the socket with 1009."""
        client = open_client(server.ws_url, setup_token(server))
        try:
            client.ws.send("x" * 5000)
            assert client.close_status() == 1009
        finally:
            client.close()

    def test_client_answering_pings_stays_open(
        self, make_server: ServerFactory, setup_token: Setup, connect_either: Connect
    ) -> None:
        """A client that answers pings outlives several ping intervals and gets heartbeats."""
        with make_server(ws_ping_interval="0.3", ws_heartbeat_interval="1") as server:
            client = connect_either(server, setup_token(server))
            assert client.next(skip=())["type"] == "channelOpened"
            for _ in range(3):
                assert client.next(skip=())["type"] == "heartbeat"

    def test_idle_sockets_take_no_connection_slot_of_the_worker(
        self, make_server: ServerFactory, setup_token: Setup, connect_either: Connect, publisher: EventPublisher
    ) -> None:
        """Idle sockets wait in the reactor, not in the worker's pool: twice VORA_WORKER_CONNECTIONS stay served."""
        with make_server(worker_connections="3") as server:
            token = setup_token(server)
            clients = [connect_either(server, token) for _ in range(6)]
            published = publisher.publish(IDENTITY, "presence", {"status": "busy"})
            for client in clients:
                assert client.next()["eventId"] == published.event_id
            assert setup_token(server)  # and the worker still answers requests

    def test_sigterm_drains_with_maintenance_and_readiness_turns_503(
        self, make_server: ServerFactory, setup_token: Setup, connect_either: Connect
    ) -> None:
        """On SIGTERM the worker sends channelTerminated(maintenance), closes with 1001, and answers 503."""
        with make_server() as server:
            client = connect_either(server, setup_token(server))
            probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            probe.request("GET", "/vora/health/readiness")
            ready = probe.getresponse()
            ready.read()
            assert ready.status == 204
            [worker] = server.worker_pids()
            os.kill(worker, signal.SIGTERM)
            event = client.next()
            assert event["data"] == {"reason": "maintenance"}
            assert client.close_status() == 1001
            probe.request("GET", "/vora/health/readiness")
            draining = probe.getresponse()
            assert draining.status == 503
            assert b"draining" in draining.read()
            probe.close()

    def test_sigterm_to_the_master_drains_both_transports_and_exits(
        self, make_server: ServerFactory, setup_token: Setup
    ) -> None:
        """SIGTERM to the gunicorn master, as docs/operations.md's drain says: maintenance, 1001, 503 probes, exit."""
        with make_server(workers=2, graceful_timeout="10") as server:
            socket_client = open_client(server.ws_url, setup_token(server))
            stream = open_event_stream(server.base_url, setup_token(server))
            probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            probe.request("GET", "/vora/health/readiness")
            ready = probe.getresponse()
            ready.read()
            assert ready.status == 204
            master = server.process.pid
            assert master is not None
            started = time.monotonic()
            os.kill(master, signal.SIGTERM)
            assert socket_client.next()["data"] == {"reason": "maintenance"}
            assert stream.next()["data"] == {"reason": "maintenance"}
            assert socket_client.close_status() == 1001
            # The kept-alive probe connection reaches a draining worker, whatever the master did with its listener.
            for path in ("readiness", "liveness"):
                probe.request("GET", f"/vora/health/{path}")
                draining = probe.getresponse()
                assert (draining.status, b"draining" in draining.read()) == (503, True)
            probe.close()
            stream.close()
            # No socket left open: the instance exits well before the graceful timeout.
            assert server.process.wait(10)
            assert time.monotonic() - started < 10

    def test_a_socket_still_writing_at_the_graceful_timeout_leaves_the_presence(
        self, make_server: ServerFactory, setup_token: Setup, publisher: EventPublisher, redisdb: redis.Redis
    ) -> None:
        """A socket whose write still waits when the graceful timeout ends is cut and taken out of the presence."""
        with make_server(
            graceful_timeout="1", ws_send_timeout="60", ws_send_buffer="4096", ws_queue_size="100000"
        ) as server:
            token = setup_token(server)
            stuck = socket.create_connection(("127.0.0.1", server.port))
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            key = base64.b64encode(os.urandom(16)).decode()
            stuck.sendall(
                (
                    f"GET /vora/ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            assert stuck.recv(12) == b"HTTP/1.1 101"
            wait_for(lambda: redisdb.zcard(keys.socket_presence(IDENTITY)) == 1, 10, what="the socket's presence")
            note = "x" * 250
            for _ in range(1500):  # far more than both kernel buffers hold: the server's write waits for the peer
                publisher.publish(IDENTITY, "presence", {"status": "busy", "note": note})
            wait_for(lambda: select.select([stuck], [], [], 0)[0] != [], 10, what="the server to write")
            [worker] = server.worker_pids()
            os.kill(worker, signal.SIGTERM)
            wait_for(lambda: redisdb.zcard(keys.socket_presence(IDENTITY)) == 0, 15, what="the presence to be left")
            stuck.close()

    def test_slow_consumer_is_cut_off_without_delaying_a_fast_one(
        self,
        make_server: ServerFactory,
        setup_token: Setup,
        connect_either: Connect,
        publisher: EventPublisher,
    ) -> None:
        """A socket that stops reading is closed once its queue overflows; the other gets every event in order."""
        with make_server(ws_queue_size="50", ws_send_timeout="2", ws_send_buffer="4096") as server:
            slow_token = setup_token(server)
            slow = socket.create_connection(("127.0.0.1", server.port))
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            key = base64.b64encode(os.urandom(16)).decode()
            slow.sendall(
                (
                    f"GET /vora/ws?token={slow_token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            assert slow.recv(12) == b"HTTP/1.1 101"
            fast = connect_either(server, setup_token(server))
            note = "x" * 200
            published: list[Any] = []
            received: list[dict[str, Any]] = []
            # In batches of 40, each once the fast client has read the last: its queue (50) never overflows
            # however busy the machine, while the slow one's fills and is cut.
            for _ in range(75):
                batch = [publisher.publish(IDENTITY, "presence", {"status": "busy", "note": note}) for _ in range(40)]
                published.extend(batch)
                received.extend(fast.events(len(batch), timeout=30))
            assert [e["eventId"] for e in received] == [p.event_id for p in published]
            slow.settimeout(30)
            total = 0
            while chunk := slow.recv(65536):  # the server closes the slow socket: recv then returns b""
                total += len(chunk)
            assert total < 3000 * len(note)
            slow.close()


def test_permessage_deflate_is_not_negotiated(server: RunningServer, setup_token: Setup) -> None:
    """A client offering permessage-deflate gets an upgrade without it (its zlib state costs ~90 KB a socket)."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET /vora/ws?token={setup_token(server)} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = raw.recv(4096)
        assert chunk, "the server closed before answering the upgrade"
        response += chunk
    raw.close()
    head = response.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 101")
    assert "sec-websocket-extensions" not in head


def test_open_sockets_are_present_in_redis_until_they_close(
    server: RunningServer, setup_token: Setup, connect_either: Connect, redisdb: redis.Redis
) -> None:
    """Each open socket is counted on its session in Redis, for every instance to see, until it closes."""
    store = SessionStore(redisdb, ttl_seconds=3600, max_per_user=5)
    token = setup_token(server)
    session_id = redisdb.get(keys.websocket_token(IDENTITY, hash_token(token)))
    assert session_id is not None
    first, second = connect_either(server, token), connect_either(server, token)
    counts = wait_for(
        lambda: store.open_sockets(IDENTITY, int(time.time() * 1000)).get(session_id.decode()) == 2,  # type: ignore[union-attr] # redis-py types sync replies as Awaitable | Any
        10,
        what="both sockets to be present",
    )
    assert counts
    first.close()
    wait_for(
        lambda: store.open_sockets(IDENTITY, int(time.time() * 1000)) == {session_id.decode(): 1},
        10,
        what="the closed socket to leave",
    )
    second.close()
    wait_for(lambda: store.open_sockets(IDENTITY, int(time.time() * 1000)) == {}, 10, what="no socket to be left")
