"""Hostile and far-behind clients on a real server: each case once broke the socket side, none may come back."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable

import pytest
import redis
import requests
import websocket

from testbed.vora_server import RunningServer
from testbed.wait import wait_for
from tests.harness.ws_client import QUIET, Client, assert_error_shape, handshake_headers
from tests.harness.ws_server import IDENTITY, ServerFactory
from vora.events.publisher import EventPublisher
from vora.store import keys

pytestmark = [pytest.mark.slow, pytest.mark.ws]

Connect = Callable[..., Client]
Setup = Callable[..., str]


class TestFarBehind:
    """A resuming client far behind gets every retained event, in order, once."""

    @pytest.mark.parametrize("backlog", [1_200, 9_999])
    def test_resume_far_behind_delivers_every_event_then_live_ones(
        self, server: RunningServer, setup_token: Setup, connect: Connect, publisher: EventPublisher, backlog: int
    ) -> None:
        """Past the queue size (1,000) and up to the retention (10,000), nothing is skipped and no 4008 comes."""
        token = setup_token(server)
        seen = publisher.publish(IDENTITY, "callHeld", {"callId": "seen"})
        missed = [publisher.publish(IDENTITY, "callHeld", {"callId": f"m-{n}"}) for n in range(backlog)]
        client = connect(server, token, last_event_id=seen.event_id)
        live: list[str] = []

        def publish_live() -> None:
            live.extend(publisher.publish(IDENTITY, "callEnded", {"callId": f"l-{n}"}).event_id for n in range(300))

        producer = threading.Thread(target=publish_live)
        producer.start()
        received = client.events(backlog + 300, timeout=60)
        producer.join(timeout=30)
        assert "resumeGap" not in {e["type"] for e in client.received}
        assert [e["eventId"] for e in received] == [m.event_id for m in missed] + live
        numbers = [e["sequenceNumber"] for e in received]
        assert numbers == list(range(seen.sequence_number + 1, seen.sequence_number + 1 + backlog + 300))

    def test_resume_from_the_last_delivered_event_gets_only_newer_ones(
        self, server: RunningServer, setup_token: Setup, connect: Connect, publisher: EventPublisher
    ) -> None:
        """After a far-behind resume, resuming from the last event received yields exactly what came after it."""
        token = setup_token(server)
        seen = publisher.publish(IDENTITY, "callHeld", {"callId": "seen"})
        for n in range(1_200):
            publisher.publish(IDENTITY, "callHeld", {"callId": f"m-{n}"})
        first = connect(server, token, last_event_id=seen.event_id)
        last = first.events(1_200, timeout=60)[-1]
        first.close()
        after = publisher.publish(IDENTITY, "callEnded", {"callId": "after"})
        second = connect(server, token, last_event_id=last["eventId"])
        assert second.next()["eventId"] == after.event_id


class TestBadResumePoints:
    """A lastEventId Redis cannot use is refused at the handshake, and a stream Redis refuses closes the socket."""

    @pytest.mark.parametrize(
        "last_event_id",
        ["18446744073709551616-0", "0-18446744073709551616", "99999999999999999999-1", "1-99999999999999999999"],
    )
    def test_last_event_id_beyond_64_bits_is_400(
        self, server: RunningServer, setup_token: Setup, last_event_id: str
    ) -> None:
        """Either part above 2**64-1 gets HTTP 400 in the error shape before the upgrade."""
        response = requests.get(
            f"{server.base_url}/ws",
            params={"token": setup_token(server), "lastEventId": last_event_id},
            headers=handshake_headers(),
            timeout=5,
        )
        assert "lastEventId" in assert_error_shape(response, 400)["message"]

    def test_largest_last_event_id_is_accepted(
        self, server: RunningServer, setup_token: Setup, connect: Connect
    ) -> None:
        """2**64-1 in both parts is a valid stream id: the socket opens, says it is ahead, and stays open (no 1011)."""
        client = connect(server, setup_token(server), last_event_id="18446744073709551615-18446744073709551615")
        assert client.next(skip=())["type"] == "channelOpened"
        assert client.next(skip=())["data"]["reason"] == "ahead"
        assert client.next(skip=())["type"] == "heartbeat"

    @pytest.mark.parametrize("history", ["events", "none"])
    def test_last_event_id_an_hour_ahead_is_announced_and_live_events_arrive(
        self,
        server: RunningServer,
        setup_token: Setup,
        connect: Connect,
        publisher: EventPublisher,
        redisdb: redis.Redis,
        history: str,
    ) -> None:
        """A lastEventId an hour after the stream gets resumeGap(ahead), then every live event, none dropped."""
        token = setup_token(server)
        newest = publisher.publish(IDENTITY, "callHeld", {"callId": "old"}) if history == "events" else None
        if newest is None:
            future = f"{int(redisdb.time()[0]) * 1000 + 3_600_000}-1"  # type: ignore[index] # redis-py types sync replies as Awaitable | Any
        else:
            millis, seq = newest.event_id.split("-")
            future = f"{int(millis) + 3_600_000}-{seq}"
        client = connect(server, token, last_event_id=future)
        gap = client.next()
        assert gap["type"] == "resumeGap"
        assert gap["data"] == {
            "reason": "ahead",
            "requestedEventId": future,
            "oldestEventId": None,
            "newestEventId": None if newest is None else newest.event_id,
        }
        live = [publisher.publish(IDENTITY, "callHeld", {"callId": f"live-{n}"}) for n in range(3)]
        assert [e["eventId"] for e in client.events(3)] == [p.event_id for p in live]

    def test_stream_redis_refuses_closes_with_1011_instead_of_retrying(
        self, server: RunningServer, setup_token: Setup, connect: Connect, redisdb: redis.Redis
    ) -> None:
        """A catch-up Redis refuses (WRONGTYPE) is not retried: the socket closes with 1011 and the log says why."""
        token = setup_token(server)
        redisdb.set(keys.event_stream(IDENTITY), "not a stream")
        client = connect(server, token)
        assert client.close_status(timeout=10) == 1011
        logged = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        (refused,) = [line for line in logged if line.get("msg") == "catch-up refused"]
        assert refused["error"] == "ResponseError"
        assert refused["detail"].startswith("WRONGTYPE")  # Redis' own words: the type alone does not say which key


class TestHandshake:
    """Handshakes wsproto would reject are answered before the upgrade, in the error shape, without a traceback."""

    @pytest.mark.parametrize(
        ("changes", "status"),
        [
            ({"Sec_WebSocket_Version": "8"}, 426),
            ({"Sec_WebSocket_Version": None}, 400),
            ({"Sec_WebSocket_Key": None}, 400),
            ({"Sec_WebSocket_Key": "not base64!"}, 400),
            ({"Sec_WebSocket_Key": base64.b64encode(b"short").decode()}, 400),
            ({"Connection": "keep-alive"}, 400),
        ],
    )
    def test_broken_handshake_is_a_4xx_in_the_error_shape(
        self, server: RunningServer, setup_token: Setup, changes: dict[str, str | None], status: int
    ) -> None:
        """Each broken handshake gets its 4xx with the VORA error body; the server logs no traceback."""
        response = requests.get(
            f"{server.base_url}/ws",
            params={"token": setup_token(server)},
            headers=handshake_headers(**changes),
            timeout=5,
        )
        assert_error_shape(response, status)
        if "Sec_WebSocket_Version" in changes:
            assert response.headers["Sec-WebSocket-Version"] == "13"
        assert "Traceback" not in server.log()


class TestSocketCap:
    """A session holds at most VORA_WS_MAX_SOCKETS_PER_SESSION sockets at once."""

    def test_socket_past_the_cap_is_refused_with_429_until_one_closes(
        self, make_server: ServerFactory, setup_token: Setup, connect: Connect
    ) -> None:
        """With a cap of 3 the fourth socket of a token gets 429 in the error shape; once one closes, one fits again."""
        with make_server(ws_max_sockets_per_session="3") as server:
            token = setup_token(server)
            opened = [connect(server, token) for _ in range(3)]
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                websocket.create_connection(f"{server.ws_url}?token={token}", timeout=5)
            assert refused.value.status_code == 429
            body = json.loads(refused.value.resp_body or b"{}")
            assert body["status"] == "429"
            assert "VORA_WS_MAX_SOCKETS_PER_SESSION" in body["message"]
            other = connect(server, setup_token(server))  # another session of the identity is not affected
            assert other.ws.connected
            opened[0].close()

            def reopened() -> Client | None:
                try:
                    return connect(server, token)
                except websocket.WebSocketBadStatusException:
                    return None

            assert wait_for(reopened, 10, what="a socket to fit again after one closed").ws.connected


class TestStalledReader:
    """A client that stops reading gets close 4008 when it reads again, not a bare TCP cut."""

    def test_stalled_reader_gets_close_4008_after_the_send_timeout(
        self, make_server: ServerFactory, setup_token: Setup, publisher: EventPublisher
    ) -> None:
        """A write blocked past VORA_WS_SEND_TIMEOUT is followed by close 4008 once the client reads again."""
        # The queue never overflows: only the blocked write (kernel buffers of 4 KiB each way) can end the socket.
        with make_server(ws_queue_size="100000", ws_send_timeout="2", ws_send_buffer="4096") as server:
            token = setup_token(server)
            stalled = websocket.create_connection(
                f"{server.ws_url}?token={token}", timeout=10, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
            )
            client = Client(stalled)
            note = "x" * 200
            try:
                for _ in range(600):
                    publisher.publish(IDENTITY, "presence", {"status": "busy", "note": note})
                wait_for(lambda: "socket write failed" in server.log(), 20, what="the server's write to time out")
                assert client.close_status(timeout=10) == 4008
                assert all(e["type"] == "presence" for e in client.received if e["type"] not in QUIET)
            finally:
                client.close()


class TestBearerRule:
    """The socket reads its bearer header by the REST API's rule."""

    @pytest.mark.parametrize(("template", "opens"), [("Bearer\t{}", True), ("BEARER  {}", True), ("Bearer{}", False)])
    def test_socket_reads_the_bearer_header_like_rest(
        self, server: RunningServer, setup_token: Setup, template: str, opens: bool
    ) -> None:
        """A tab or several spaces after the scheme, in any case, opens the socket; no separator is a 401."""
        header = f"Authorization: {template.format(setup_token(server))}"
        if opens:
            ws = websocket.create_connection(server.ws_url, timeout=5, header=[header])
            ws.close()
        else:
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                websocket.create_connection(server.ws_url, timeout=5, header=[header])
            assert refused.value.status_code == 401


def sent_until_cut(sock: socket.socket, chunk: bytes, most: int) -> int:
    """Write chunk after chunk until the server cuts the connection or most bytes went out; return how many did."""
    sock.settimeout(10)  # a server that stopped reading without closing fails the test with TimeoutError
    sent = 0
    try:
        while sent < most:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


class TestClientSends:
    """A client may send pongs, pings and small keep-alives within a budget; more closes its socket with 4029."""

    def test_a_flood_of_small_messages_is_closed_with_4029(
        self, server: RunningServer, setup_token: Setup, connect: Connect
    ) -> None:
        """Two hundred one-byte text messages at once (the budget is 60 frames a minute) close the socket with 4029."""
        client = connect(server, setup_token(server))
        assert client.ws.sock is not None
        # One write: all of it is in the kernel before the server closes (no EPIPE for a later send).
        client.ws.sock.sendall(websocket.ABNF.create_frame("x", websocket.ABNF.OPCODE_TEXT).format() * 200)
        assert client.close_status() == 4029

    def test_a_flood_of_bytes_is_cut_off_after_the_budget(
        self, server: RunningServer, setup_token: Setup, connect: Connect
    ) -> None:
        """A client streaming 64 MB of 1 KB messages is cut off long before: the worker stops reading at 64 KiB."""
        client = connect(server, setup_token(server))
        frame = websocket.ABNF.create_frame("x" * 1000, websocket.ABNF.OPCODE_TEXT).format()
        assert client.ws.sock is not None
        sent = sent_until_cut(client.ws.sock, frame * 64, 64 * 1024 * 1024)
        # What the kernel buffers on both sides took before the server's close came back, and no more.
        assert sent < 16 * 1024 * 1024

    def test_pongs_pings_and_keepalive_text_within_the_budget_keep_the_socket(
        self,
        make_server: ServerFactory,
        setup_token: Setup,
        connect: Connect,
        publisher: EventPublisher,
    ) -> None:
        """A client answering pings, sending its own pings and keep-alive texts, keeps getting events."""
        with make_server(ws_ping_interval="0.2") as server:
            client = connect(server, setup_token(server))
            for _ in range(20):
                client.ws.ping("k")
                client.ws.send("ping")
            published = publisher.publish(IDENTITY, "presence", {"status": "busy"})
            event = client.next()  # websocket-client answers the server's pings meanwhile
            assert event["eventId"] == published.event_id
