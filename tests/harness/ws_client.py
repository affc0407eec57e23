"""A real WebSocket client for the event channel that checks every frame against the AsyncAPI contract."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import time
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import jsonschema
import redis
import requests
import websocket

from tests.harness.tokens import TokenFactory
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import EventCatalog, EventPublisher, load_asyncapi
from vora.store.streams import StreamStore


class EventContract:
    """Validate every frame the server sends against its AsyncAPI message schema."""

    def __init__(self) -> None:
        document = load_asyncapi(DEFAULT_SPEC_DIR)
        self._components = document["components"]
        self._validators: dict[str, jsonschema.Draft7Validator] = {}

    def check(self, envelope: dict[str, Any]) -> None:
        """Raise unless the envelope matches the message schema of its type."""
        event_type = envelope.get("type")
        assert isinstance(event_type, str), f"no event type in {envelope!r}"
        assert event_type in self._components["messages"], f"unknown event type {event_type!r}"
        if event_type not in self._validators:
            payload_ref = self._components["messages"][event_type]["payload"]["$ref"]
            self._validators[event_type] = jsonschema.Draft7Validator(
                {"$ref": payload_ref, "components": self._components},
                format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
            )
        self._validators[event_type].validate(envelope)


CONTRACT = EventContract()
# What next() passes over unless told otherwise: the messages that say nothing about the stream's events.
QUIET = ("heartbeat", "channelOpened")


def handshake_headers(**changes: str | None) -> dict[str, str]:
    """Return the headers of a sound WebSocket handshake with some changed (None removes one)."""
    headers: dict[str, str | None] = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    headers.update({name.replace("_", "-"): value for name, value in changes.items()})
    return {name: value for name, value in headers.items() if value is not None}


def assert_error_shape(response: requests.Response, status: int) -> dict[str, str]:
    """Check a refusal's status and its VORA error body."""
    assert response.status_code == status, response.text
    body: dict[str, str] = response.json()
    assert set(body) == {"timestamp", "status", "error", "message"}
    assert body["status"] == str(status)
    return body


class Client:
    """A real WebSocket client that checks each event against the contract."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    def next(self, skip: tuple[str, ...] = QUIET, timeout: float = 10.0) -> dict[str, Any]:
        """Return the next event whose type is not skipped, within timeout seconds however many are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no event other than {', '.join(skip)} arrived within {timeout}s")
            self.ws.settimeout(remaining)
            frame = self.ws.recv()
            assert frame, "the server closed the socket"
            envelope: dict[str, Any] = json.loads(frame)
            CONTRACT.check(envelope)
            self.received.append(envelope)
            if envelope["type"] not in skip:
                return envelope

    def events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Return the next count stream events."""
        return [self.next(timeout=timeout) for _ in range(count)]

    def close_status(self, timeout: float = 10.0) -> int:
        """Read until the server closes the socket, within timeout seconds in all; return the close code."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the server did not close the socket within {timeout}s")
            self.ws.settimeout(remaining)
            opcode, frame = self.ws.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else 1005
            if opcode == websocket.ABNF.OPCODE_TEXT:
                envelope = json.loads(frame.data)
                CONTRACT.check(envelope)
                self.received.append(envelope)

    def dropped(self, timeout: float = 10.0) -> int | None:
        """Read until the socket ends; return its close code, or None when the connection was cut without one."""
        try:
            return self.close_status(timeout)
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return None

    def close(self) -> None:
        """Close from the client side and release the socket whatever state it is in."""
        with contextlib.suppress(Exception):
            self.ws.close(timeout=1)
        with contextlib.suppress(Exception):
            self.ws.shutdown()


def open_client(
    ws_url: str, token: str | None, last_event_id: str | None = None, bearer: bool = False, timeout: float = 10.0
) -> Client:
    """Open a socket at ws_url with a WebSocket token (in the query, or as a bearer header) and a resume point."""
    query = []
    if token and not bearer:
        query.append(f"token={token}")
    if last_event_id:
        query.append(f"lastEventId={last_event_id}")
    url = ws_url + ("?" + "&".join(query) if query else "")
    headers = [f"Authorization: Bearer {token}"] if bearer else []
    return Client(websocket.create_connection(url, timeout=timeout, header=headers))


def make_publisher(client: redis.Redis, max_length: int = 10_000, max_age: int = 86_400) -> EventPublisher:
    """Publish events through a Redis client the way the telephony side does."""
    return EventPublisher(
        EventCatalog(DEFAULT_SPEC_DIR), StreamStore(client, max_length=max_length, max_age_seconds=max_age)
    )


def bearer(make_token: TokenFactory, subject: str = "alice") -> dict[str, str]:
    """Return an Authorization header with an access token for a user."""
    return {"Authorization": f"Bearer {make_token(subject)}"}


class EventClient(Protocol):
    """What the behavioural tests need of a client, over either transport."""

    received: list[dict[str, Any]]

    def next(self, skip: tuple[str, ...] = QUIET, timeout: float = 10.0) -> dict[str, Any]:
        """Return the next event whose type is not skipped."""
        ...

    def events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Return the next count stream events."""
        ...

    def close_status(self, timeout: float = 10.0) -> int:
        """Read until the server closes; return the close code."""
        ...

    def dropped(self, timeout: float = 10.0) -> int | None:
        """Read until the connection ends; return its close code or None."""
        ...

    def close(self) -> None:
        """Close from the client side."""
        ...


class EventStreamRefused(ConnectionError):
    """The server answered the event-stream request with an error instead of the stream."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"refused with {status}: {body[:300]!r}")
        self.status_code = status
        self.body = body


class EventStreamClient:
    """A real Server-Sent Events client on a raw socket, with Client's interface (close codes from the last comment)."""

    def __init__(self, sock: socket.socket, leftover: bytes, *, chunked: bool = False) -> None:
        self.sock = sock
        self.received: list[dict[str, Any]] = []
        self.retry_ms: int | None = None
        self.last_event_id: str | None = None
        self._chunked = chunked  # a proxy (nginx) re-frames the close-delimited stream in chunks
        self._raw = b""
        self._buffer = b""
        self._closed_code: int | None = None
        self._ended = False
        self._take(leftover)

    def _take(self, data: bytes) -> None:
        """Add received bytes to the stream, decoding chunks when a proxy chunked it; the last chunk ends it."""
        if not self._chunked:
            self._buffer += data
            return
        self._raw += data
        while b"\r\n" in self._raw:
            size_line, rest = self._raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            if size == 0:
                self._ended = True
                self._raw = b""
                return
            self._buffer += rest[:size]
            self._raw = rest[size + 2 :]

    def _message(self, deadline: float) -> dict[str, str] | None:
        """Return the fields of the next message (comments included as 'comment'), or None when the stream ended."""
        while b"\n\n" not in self._buffer:
            if self._ended:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no event-stream message arrived in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self._ended = True
            self._take(data)
            if self._ended and b"\n\n" not in self._buffer:
                if not self._buffer.strip():
                    return None
                self._buffer += b"\n\n"
        raw, self._buffer = self._buffer.split(b"\n\n", 1)
        fields: dict[str, str] = {}
        for line in raw.decode().split("\n"):
            name, _, value = line.partition(":")
            fields["comment" if name == "" else name] = value.removeprefix(" ")
        return fields

    def _envelope(self, deadline: float) -> dict[str, Any] | None:
        while True:
            fields = self._message(deadline)
            if fields is None:
                return None
            if "retry" in fields:
                self.retry_ms = int(fields["retry"])
            if "comment" in fields and fields["comment"].startswith("closed "):
                self._closed_code = int(fields["comment"].split()[1])
            if "data" not in fields:
                continue
            envelope: dict[str, Any] = json.loads(fields["data"])
            CONTRACT.check(envelope)
            # Stream events carry their eventId as `id:`; channelOpened the position it starts after.
            position = envelope["data"]["lastEventId"] if envelope["type"] == "channelOpened" else envelope["eventId"]
            assert ("id" in fields) == (position is not None), fields
            if "id" in fields:
                assert fields["id"] == position
                self.last_event_id = fields["id"]
            self.received.append(envelope)
            return envelope

    def next(self, skip: tuple[str, ...] = QUIET, timeout: float = 10.0) -> dict[str, Any]:
        """Return the next event whose type is not skipped, within timeout seconds however many are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            envelope = self._envelope(deadline)
            assert envelope is not None, "the server ended the stream"
            if envelope["type"] not in skip:
                return envelope

    def events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Return the next count stream events."""
        return [self.next(timeout=timeout) for _ in range(count)]

    def next_or_end(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """Return the next event that is not a heartbeat or channelOpened, or None when the stream ends first."""
        deadline = time.monotonic() + timeout
        while (envelope := self._envelope(deadline)) is not None:
            if envelope["type"] not in QUIET:
                return envelope
        return None

    def close_status(self, timeout: float = 10.0) -> int:
        """Read until the server ends the stream; return the code its closing comment names."""
        deadline = time.monotonic() + timeout
        while self._envelope(deadline) is not None:
            pass
        if self._closed_code is None:
            raise ConnectionError("the stream ended without its closing comment")
        return self._closed_code

    def dropped(self, timeout: float = 10.0) -> int | None:
        """Read until the stream ends; return its close code, or None when it was cut without one."""
        try:
            return self.close_status(timeout)
        except ConnectionError:
            return None

    def close(self) -> None:
        """Close from the client side."""
        with contextlib.suppress(OSError):
            self.sock.close()


def open_event_stream(
    base_url: str,
    token: str | None,
    last_event_id: str | None = None,
    bearer: bool = False,
    timeout: float = 10.0,
    header_last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> EventStreamClient:
    """Open the event stream at base_url/sse like EventSource (or with a bearer header); raise EventStreamRefused."""
    parts = urlsplit(base_url)
    query = {}
    if token and not bearer:
        query["token"] = token
    if last_event_id:
        query["lastEventId"] = last_event_id
    target = f"{parts.path}/sse" + ("?" + urlencode(query) if query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream", "Cache-Control: no-cache"]
    if bearer and token:
        lines.append(f"Authorization: Bearer {token}")
    if header_last_event_id:
        lines.append(f"Last-Event-ID: {header_last_event_id}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    if status != 200:
        header_lines = head.split(b"\r\n")
        lengths = [int(line.split(b":", 1)[1]) for line in header_lines if line.lower().startswith(b"content-length:")]
        length = lengths[0] if lengths else 0
        while len(rest) < length and (chunk := sock.recv(65536)):
            rest += chunk
        sock.close()
        raise EventStreamRefused(status, rest)
    content_type = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-type:")]
    assert content_type == [b"Content-Type: text/event-stream; charset=utf-8"], head
    chunked = any(line.lower() == b"transfer-encoding: chunked" for line in head.split(b"\r\n"))
    return EventStreamClient(sock, rest, chunked=chunked)
