"""Talk raw HTTP/1.1 to a loopback server, for requests no HTTP client library would send."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from dataclasses import dataclass
from typing import Any


@dataclass
class RawReply:
    """What a server sent back on a raw connection, split into status, headers and body."""

    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool

    def json(self) -> Any:
        """Parse the body as JSON."""
        return json.loads(self.body)


def read_reply(sock: socket.socket, deadline_s: float = 15.0) -> RawReply:
    """Read one HTTP/1.1 response with a Content-Length from a raw socket, and tell whether the server closed."""
    sock.settimeout(deadline_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a complete response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    closed = False
    if headers.get("connection") == "close":
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:  # closed with bytes of ours still unread
            closed = True
    return RawReply(int(status_line.split()[1]), headers, body[:length], closed)


def raw_exchange(port: int, request: bytes, deadline_s: float = 15.0) -> RawReply:
    """Send raw bytes to a loopback server and read its one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=deadline_s) as sock:
        with contextlib.suppress(OSError):  # a server may refuse before it has read everything
            sock.sendall(request)
        return read_reply(sock, deadline_s)


def assert_refused(reply: RawReply, status: int, *fragments: str) -> None:
    """Check a refusal in the VORA error shape that closes the connection."""
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"timestamp", "status", "error", "message"}
    assert body["status"] == str(status)
    for fragment in fragments:
        assert fragment in body["message"]
    assert reply.headers["connection"] == "close"
    assert reply.closed


def upgrade_request(
    target: str, headers: list[tuple[str, str]], method: str = "GET", version: str = "HTTP/1.1"
) -> bytes:
    """Render a WebSocket upgrade request head byte for byte, headers in order (duplicates and odd bytes kept)."""
    lines = [f"{method} {target} {version}", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _frame_end(data: bytes) -> int | None:
    """Return where the unmasked server frame at the start of data ends, or None while it is incomplete."""
    if len(data) < 2:
        return None
    size, start = data[1] & 0x7F, 2
    if size == 126:
        if len(data) < 4:
            return None
        size, start = int.from_bytes(data[2:4], "big"), 4
    elif size == 127:
        if len(data) < 10:
            return None
        size, start = int.from_bytes(data[2:10], "big"), 10
    return start + size if len(data) >= start + size else None


def read_upgrade(sock: socket.socket, deadline_s: float = 15.0) -> tuple[bytes, bytes]:
    """Read a 101's head (up to its blank line) and the first whole WebSocket frame after it."""
    sock.settimeout(deadline_s)
    data = b""
    while True:
        head, blank, rest = data.partition(b"\r\n\r\n")
        end = _frame_end(rest) if blank else None
        if end is not None:
            return head + blank, rest[:end]
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a 101 and a frame: {data!r}")
        data += chunk


def read_close_code(sock: socket.socket, deadline_s: float = 15.0) -> int:
    """Read server frames, passing over the others, until a close frame; return its code."""
    sock.settimeout(deadline_s)
    data = b""
    while True:
        end = _frame_end(data)
        if end is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed without a close frame: {data!r}")
            data += chunk
            continue
        frame, data = data[:end], data[end:]
        if frame[0] & 0x0F == 0x8:
            return int.from_bytes(frame[2:4], "big")


def reset_after_head(port: int, request: bytes, deadline_s: float = 15.0) -> int:
    """Send a request, read only its answer's head, then reset the connection (RST, as a dying radio's peer sees).

    Return the answer's status. Whatever followed the head (a socket's channelOpened) is never read.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline_s)
    try:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(1)
            if not chunk:
                raise ConnectionError(f"closed before a complete response head: {data!r}")
            data += chunk
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()
    return int(data.split(b" ", 2)[1])
