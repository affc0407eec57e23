"""The WebSocket upgrade over a real server and raw sockets: the exact 101, what is never negotiated, the refusals."""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from testbed.vora_server import RunningServer
from tests.harness.raw_http import RawReply, read_close_code, read_reply, read_upgrade, upgrade_request
from tests.harness.ws_server import IDENTITY

pytestmark = [pytest.mark.slow, pytest.mark.ws]

Setup = Callable[..., str]

SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3, whose answer is below
SAMPLE_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
SOUND = [
    ("Host", "127.0.0.1"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", SAMPLE_KEY),
]
DEFLATE = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
CLOSE_PROTOCOL_ERROR = 1002


def _headers(
    replace: dict[str, str | None] | None = None, add: tuple[tuple[str, str], ...] = ()
) -> list[tuple[str, str]]:
    """Return the sound handshake's headers with some replaced (None drops one) and some added."""
    replace = replace or {}
    kept = [(name, replace.get(name, value)) for name, value in SOUND]
    return [(name, value) for name, value in kept if value is not None] + list(add)


def _upgrade(server: RunningServer, request: bytes) -> tuple[socket.socket, bytes, bytes]:
    """Send a handshake and return the open socket, the 101's head and the first frame (channelOpened)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(request)
    head, frame = read_upgrade(sock)
    return sock, head, frame


def _refusal(server: RunningServer, request: bytes) -> RawReply:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        return read_reply(sock)


def _opened(frame: bytes) -> dict[str, object]:
    """Check the first frame is an unmasked final text frame (no RSV bit: no extension) and return its message."""
    assert frame[0] == 0x81, frame[:2]
    assert not frame[1] & 0x80  # a server never masks
    size, start = frame[1] & 0x7F, 2
    if size == 126:
        size, start = struct.unpack("!H", frame[2:4])[0], 4
    message: dict[str, object] = json.loads(frame[start : start + size])
    assert message["type"] == "channelOpened"
    return message


class TestAccepted:
    """A sound handshake gets the one 101 the server has always sent: no subprotocol, no extension, ever."""

    @pytest.mark.parametrize(
        ("method", "version", "replace", "add"),
        [
            ("GET", "HTTP/1.1", {}, ()),
            ("GET", "HTTP/1.1", {}, (("Sec-WebSocket-Protocol", "chat, superchat"),)),
            ("GET", "HTTP/1.1", {}, (DEFLATE,)),
            ("GET", "HTTP/1.1", {}, (("Sec-WebSocket-Extensions", "permessage-deflate, x-webkit-deflate-frame"),)),
            ("GET", "HTTP/1.1", {}, (("Sec-WebSocket-Protocol", "vora"), DEFLATE)),
            ("GET", "HTTP/1.1", {"Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade"}, ()),
            ("GET", "HTTP/1.0", {}, ()),
            ("HEAD", "HTTP/1.1", {}, ()),  # Flask serves HEAD with the GET view: upgraded as it always was
        ],
        ids=["plain", "subprotocols", "deflate", "two-extensions", "both", "header-case-and-lists", "http10", "head"],
    )
    def test_the_101_is_the_rfc_sample_answer_whatever_is_offered(
        self,
        server: RunningServer,
        setup_token: Setup,
        method: str,
        version: str,
        replace: dict[str, str | None],
        add: tuple[tuple[str, str], ...],
    ) -> None:
        """The head is byte for byte RFC 6455's answer to its sample key; channelOpened follows as a plain frame."""
        target = f"/vora/ws?token={setup_token(server)}"
        sock, head, frame = _upgrade(server, upgrade_request(target, _headers(replace, add), method, version))
        with sock:
            assert head == SAMPLE_101
            _opened(frame)

    def test_a_compressed_frame_after_offering_deflate_is_a_protocol_error(
        self, server: RunningServer, setup_token: Setup
    ) -> None:
        """permessage-deflate was offered, not agreed: a frame with RSV1 set is answered with close 1002."""
        target = f"/vora/ws?token={setup_token(server)}"
        sock, head, _ = _upgrade(server, upgrade_request(target, _headers(add=(DEFLATE,))))
        with sock:
            assert b"Sec-WebSocket-Extensions" not in head
            mask = os.urandom(4)
            payload = b"\xf2\x48\xcd\xc9\xc9\x07\x00"  # "Hello", deflated as RFC 7692 section 7.2.3.1 shows
            masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
            sock.sendall(bytes((0xC1, 0x80 | len(payload))) + mask + masked)  # FIN, RSV1, text
            assert read_close_code(sock) == CLOSE_PROTOCOL_ERROR

    @pytest.mark.parametrize(
        "odd",
        [("User-Agent", "a\x0cb"), ("X-Note", "tab\x0b"), ("Host", "xn--zz.test")],
        ids=["form-feed", "vertical-tab", "host-not-idna"],
    )
    def test_headers_gunicorn_took_no_longer_fail_the_upgrade(
        self, server: RunningServer, setup_token: Setup, odd: tuple[str, str]
    ) -> None:
        """A header value h11 would not re-parse, or a Host wsproto could not IDNA-decode, no longer makes a 500."""
        replace: dict[str, str | None] = {"Host": None} if odd[0] == "Host" else {}
        target = f"/vora/ws?token={setup_token(server)}"
        sock, head, frame = _upgrade(server, upgrade_request(target, _headers(replace, (odd,))))
        with sock:
            assert head == SAMPLE_101
            _opened(frame)
        assert "Traceback" not in server.log()


class TestRefused:
    """A broken handshake is refused before the upgrade with the status and words it always had."""

    @pytest.mark.parametrize(
        ("method", "replace", "add", "status", "words"),
        [
            ("GET", {"Sec-WebSocket-Key": None}, (), 400, "Sec-WebSocket-Key must be 16 bytes in base64"),
            ("GET", {"Sec-WebSocket-Key": "not base64!"}, (), 400, "Sec-WebSocket-Key must be 16 bytes in base64"),
            ("GET", {"Sec-WebSocket-Key": "c2hvcnQ="}, (), 400, "Sec-WebSocket-Key must be 16 bytes in base64"),
            ("GET", {}, (("Sec-WebSocket-Key", SAMPLE_KEY),), 400, "Sec-WebSocket-Key must be 16 bytes in base64"),
            ("GET", {"Sec-WebSocket-Version": "8"}, (), 426, "WebSocket version 13 only"),
            ("GET", {"Sec-WebSocket-Version": "13, 8"}, (), 426, "WebSocket version 13 only"),
            ("GET", {"Sec-WebSocket-Version": None}, (), 400, "WebSocket version 13 only"),
            ("GET", {"Upgrade": None}, (), 400, "only accepts WebSocket upgrades"),
            ("GET", {"Upgrade": "h2c"}, (), 400, "only accepts WebSocket upgrades"),
            ("GET", {"Connection": "keep-alive"}, (), 400, "needs 'Connection: Upgrade'"),
            ("GET", {"Host": None}, (), 400, "needs a Host header"),
            ("POST", {}, (("Content-Length", "0"),), 405, "POST is not allowed on /vora/ws"),
        ],
        ids=[
            "no-key", "key-not-base64", "key-too-short", "two-keys", "version-8", "two-versions", "no-version",
            "no-upgrade", "upgrade-h2c", "no-connection-upgrade", "no-host", "post",
        ],
    )  # fmt: skip
    def test_refusal_in_the_error_shape(
        self,
        server: RunningServer,
        setup_token: Setup,
        method: str,
        replace: dict[str, str | None],
        add: tuple[tuple[str, str], ...],
        status: int,
        words: str,
    ) -> None:
        """Each gets its status and message in VORA's error body; a version refusal names version 13."""
        target = f"/vora/ws?token={setup_token(server)}"
        reply = _refusal(server, upgrade_request(target, _headers(replace, add), method))
        assert reply.status == status, reply
        assert reply.headers["content-type"] == "application/json"
        body = reply.json()
        assert set(body) == {"timestamp", "status", "error", "message"}
        assert body["status"] == str(status)
        assert words in body["message"]
        if "Sec-WebSocket-Version" in replace:
            assert reply.headers["sec-websocket-version"] == "13"
        assert "sec-websocket-accept" not in reply.headers


def test_outside_gunicorn_the_websocket_answers_501_as_the_event_stream_does(
    client: FlaskClient, provision: Callable[[str, list[str]], None], auth: Callable[..., dict[str, str]]
) -> None:
    """In-process (Flask's test client, a development server) both event routes answer 501 in the error shape."""
    provision("alice", [IDENTITY])
    setup = client.post(
        "/vora/identity/setup", json={"connectionType": "WebSocket", "identity": IDENTITY}, headers=auth("alice")
    )
    token = setup.get_json()["webSocketToken"]  # admitted: only where it is served can refuse it
    answers = {
        "event WebSocket": client.get("/vora/ws", query_string={"token": token}, headers=SOUND),
        "event stream": client.get("/vora/sse", query_string={"token": token}),
    }
    for route, answer in answers.items():
        assert answer.status_code == 501, (route, answer.get_data(as_text=True))
        body = answer.get_json()
        assert set(body) == {"timestamp", "status", "error", "message"}
        assert (body["status"], body["error"]) == ("501", "Not Implemented")
        assert body["message"] == f"The {route} is served by VORA's gunicorn workers only"
