"""Tests of the transport without a server: what it answers to the peer's frames, its pings, and what it costs."""

from __future__ import annotations

import base64
import contextlib
import gc
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import gevent
import gevent.socket
import gevent.ssl
import greenlet  # type: ignore[import-untyped]  # greenlet ships no type stubs
import pytest
import websocket
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection as FrameConnection
from wsproto.events import AcceptConnection, Request
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from testbed.ports import HOST
from tests.harness.tls import self_signed
from tests.harness.ws_pair import SocketPair, socket_pair
from vora.ws.reactor import GeventReactor
from vora.ws.transport import (
    CLOSE_CLIENT_FLOOD,
    ClientBudget,
    WebsocketTransport,
    accept_token,
    switching_protocols,
    text_frame,
)

pytestmark = pytest.mark.ws

UNMASKED_TEXT_FRAME = b"\x81\x02hi"  # RFC 6455 §5.1: a client must mask its frames


def serve(transport: WebsocketTransport) -> None:
    """Wait on the transport until the socket closes, as a connection with nothing to write does."""
    while transport.connected:
        transport.wait(math.inf)


@contextlib.contextmanager
def served(ping_interval: float = 0, max_message_size: int = 4096) -> Iterator[SocketPair]:
    """Open a socket pair whose server end waits in a thread of its own (a worker's greenlet stand-in)."""
    with socket_pair(ping_interval=ping_interval, max_message_size=max_message_size) as pair:
        waiter = threading.Thread(target=serve, args=(pair.transport,), daemon=True)
        waiter.start()
        yield pair
        pair.transport.abort()
        waiter.join(timeout=10)


def next_frame(ws: websocket.WebSocket) -> websocket.ABNF:
    """Read the next frame as it came, answering nothing."""
    ws.settimeout(10)
    frame: websocket.ABNF = ws.recv_frame()
    return frame


def payload(frame: websocket.ABNF) -> bytes:
    """Return a control frame's bytes."""
    assert isinstance(frame.data, bytes)
    return frame.data


def close_code(frame: websocket.ABNF) -> int:
    """Return the status code of a close frame."""
    assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
    return int.from_bytes(payload(frame)[:2], "big")


def test_a_ping_gets_a_pong_with_its_data() -> None:
    """The peer's ping is answered with a pong carrying the same bytes."""
    with served() as pair:
        pair.client.ws.ping(b"are you there")
        frame = next_frame(pair.client.ws)
        assert (frame.opcode, frame.data) == (websocket.ABNF.OPCODE_PONG, b"are you there")


def test_a_close_gets_a_close_reply_and_ends_the_socket() -> None:
    """The peer's close 1000 is answered with close 1000, and the transport stops being connected."""
    with served() as pair:
        pair.client.ws.send_close(1000, b"bye")
        assert close_code(next_frame(pair.client.ws)) == 1000
        assert not pair.transport.connected


def test_a_message_over_the_size_limit_gets_close_1009() -> None:
    """A 200-byte message against a 100-byte limit is answered with close 1009, as simple_websocket did."""
    with served(max_message_size=100) as pair:
        pair.client.ws.send("x" * 200)
        assert close_code(next_frame(pair.client.ws)) == 1009


def test_messages_under_the_limit_are_dropped_and_the_socket_stays() -> None:
    """Messages within the limit, however many, change nothing: a ping after them still gets its pong."""
    with served(max_message_size=100) as pair:
        for _ in range(5):
            pair.client.ws.send("x" * 90)
        pair.client.ws.ping(b"still")
        frame = next_frame(pair.client.ws)
        assert (frame.opcode, frame.data) == (websocket.ABNF.OPCODE_PONG, b"still")


def test_pings_past_the_frame_budget_get_close_4029_and_the_rest_is_never_parsed() -> None:
    """A hundred pings in one write get the budget's 60 pongs, then close 4029; the 40 after it go unanswered."""
    budget = ClientBudget().frames_per_minute
    with served() as pair:
        raw = pair.client.ws.sock
        assert raw is not None
        ping = websocket.ABNF.create_frame(b"p", websocket.ABNF.OPCODE_PING).format()
        raw.sendall(ping * 100)  # 700 bytes: one read, within the byte budget
        frames = [next_frame(pair.client.ws) for _ in range(budget + 1)]
        assert {f.opcode for f in frames[:budget]} == {websocket.ABNF.OPCODE_PONG}
        assert close_code(frames[budget]) == CLOSE_CLIENT_FLOOD
        assert not pair.transport.connected


def test_a_read_past_the_byte_budget_is_closed_before_it_is_parsed() -> None:
    """Pings sent after 64 KiB of keep-alive messages get close 4029, not pongs: their bytes were never parsed."""
    with served(max_message_size=8192) as pair:
        raw = pair.client.ws.sock
        assert raw is not None
        message = websocket.ABNF.create_frame("x" * 8000, websocket.ABNF.OPCODE_TEXT).format()
        ping = websocket.ABNF.create_frame(b"p", websocket.ABNF.OPCODE_PING).format()
        raw.sendall(message * 9 + ping * 3)  # 72 KB of 9 frames: over the bytes, within the frames
        frame = next_frame(pair.client.ws)
        assert close_code(frame) == CLOSE_CLIENT_FLOOD


def test_a_protocol_error_gets_close_1002() -> None:
    """An unmasked frame from the client breaks RFC 6455 and is answered with close 1002."""
    with served() as pair:
        raw = pair.client.ws.sock
        assert raw is not None
        raw.sendall(UNMASKED_TEXT_FRAME)
        assert close_code(next_frame(pair.client.ws)) == 1002


def test_pings_come_every_interval_while_the_peer_answers() -> None:
    """A peer that answers each ping gets the next one and stays connected."""
    with served(ping_interval=0.2) as pair:
        for _ in range(3):
            frame = next_frame(pair.client.ws)
            assert frame.opcode == websocket.ABNF.OPCODE_PING
            pair.client.ws.pong(payload(frame))
        assert pair.transport.connected


def test_a_peer_that_never_answers_a_ping_gets_close_1008_at_the_next() -> None:
    """An unanswered ping is followed, one interval later, by close 1008 'Ping/Pong timeout'."""
    with served(ping_interval=0.2) as pair:
        assert next_frame(pair.client.ws).opcode == websocket.ABNF.OPCODE_PING
        frame = next_frame(pair.client.ws)
        assert close_code(frame) == 1008
        assert payload(frame)[2:] == b"Ping/Pong timeout"


def test_sockets_start_no_thread_of_their_own() -> None:
    """Twenty more open sockets add no thread to the process (simple_websocket started one each)."""
    with served():  # the process's reactor thread exists from here on
        threads_before = threading.active_count()
        with contextlib.ExitStack() as stack:
            pairs = [stack.enter_context(socket_pair()) for _ in range(20)]
            assert threading.active_count() == threads_before
            assert all(pair.transport.connected for pair in pairs)
            for pair in pairs:
                pair.transport.abort()  # nothing serves them: the clients' closes need no reply


def test_under_gevent_each_socket_is_served_by_its_own_greenlet_alone() -> None:
    """With the gevent reactor, N waiting sockets add exactly their N greenlets, and still answer pings."""
    reactor = GeventReactor()
    with contextlib.ExitStack() as stack:
        pairs = [stack.enter_context(socket_pair(reactor=reactor)) for _ in range(3)]
        gevent.sleep(0)
        greenlets_before = sum(isinstance(o, greenlet.greenlet) for o in gc.get_objects())
        waiters = [gevent.spawn(serve, pair.transport) for pair in pairs]
        gevent.sleep(0)  # each waiter parks in its transport's wait
        greenlets_after = sum(isinstance(o, greenlet.greenlet) for o in gc.get_objects())
        assert greenlets_after - greenlets_before == len(pairs)
        pongs: list[bytes] = []

        def ping_all() -> None:
            for pair in pairs:
                pair.client.ws.ping(b"green")
                pongs.append(payload(next_frame(pair.client.ws)))
                pair.client.ws.send_close(1000, b"bye")

        pinger = threading.Thread(target=ping_all)
        pinger.start()
        assert gevent.joinall(waiters, timeout=10) == waiters  # the hub runs the watches meanwhile
        pinger.join(timeout=10)
        assert pongs == [b"green"] * len(pairs)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 200_000])
def test_text_frame_is_the_frame_wsproto_would_send(size: int) -> None:
    """The shared frame the hub writes to every socket is byte for byte what wsproto sends for the same text."""
    text = ("é" + "x" * size)[:size]
    assert text_frame(text) == FrameProtocol(client=False, extensions=[]).send_data(text, fin=True)


def test_accept_token_answers_the_rfc_sample_key() -> None:
    """RFC 6455 section 1.3: the key dGhlIHNhbXBsZSBub25jZQ== is answered with s3pPLMBiTxaQ9kYGzzhZRbK+xOo=."""
    assert accept_token("dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("offers", ["", "Sec-WebSocket-Protocol: chat\r\n"])
def test_the_101_is_byte_for_byte_the_one_wsproto_wrote(offers: str) -> None:
    """The upgrade's answer is what simple_websocket had wsproto write, through h11, for the request VORA passed it.

    That was every header but Sec-WebSocket-Extensions (removed before the upgrade), no subprotocol
    chosen and permessage-deflate among the supported extensions (so agreed with nobody).
    """
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = WSConnection(ConnectionType.SERVER)
    handshake.receive_data(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offers}\r\n".encode()
    )
    assert [type(event) for event in handshake.events()] == [Request]
    wrote = handshake.send(AcceptConnection(subprotocol=None, extensions=[PerMessageDeflate()]))
    assert switching_protocols(key) == wrote


def test_a_tls_socket_is_never_written_from_another_greenlet(tmp_path: Path) -> None:
    """Over TLS the hub never writes itself, even to a writable socket: OpenSSL must retry a write with its bytes."""
    certificate = self_signed(tmp_path)
    server_context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(certificate.cert_path, certificate.key_path)
    client_context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(certificate.cert_path)
    server_plain, client_plain = gevent.socket.socketpair()
    server = server_context.wrap_socket(server_plain, server_side=True, do_handshake_on_connect=False)
    client = client_context.wrap_socket(client_plain, server_hostname=HOST, do_handshake_on_connect=False)
    handshakes = [gevent.spawn(server.do_handshake), gevent.spawn(client.do_handshake)]
    gevent.joinall(handshakes, timeout=10, raise_error=True)
    assert all(handshake.successful() for handshake in handshakes)
    transport = WebsocketTransport(
        server, FrameConnection(ConnectionType.SERVER), GeventReactor(), ping_interval=0, max_message_size=0
    )
    try:
        assert not transport.try_send(text_frame("{}"))
        transport.send_frame(text_frame("{}"))  # its own greenlet still writes to it
        assert client.recv(16) == text_frame("{}")
    finally:
        transport.release()
        server.close()
        client.close()
