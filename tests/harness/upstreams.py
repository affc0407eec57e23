"""Tiny in-process HTTP upstreams on loopback for the nginx tests: they say who served and echo upgrades."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

UPSTREAM_HEADER = "X-Upstream"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _UpstreamHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append({"path": self.path, **headers})
        if headers.get("upgrade", "").lower() == "websocket":
            self._echo_upgraded()
            return
        body = json.dumps({"upstream": self.server.name, "path": self.path, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header(UPSTREAM_HEADER, self.server.name)
        self.end_headers()
        self.wfile.write(body)

    def _echo_upgraded(self) -> None:
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header(UPSTREAM_HEADER, self.server.name)
        self.end_headers()
        self.wfile.flush()
        self.connection.settimeout(10.0)
        self.close_connection = True
        while True:
            try:
                chunk = self.rfile.read1(65536)
            except OSError:
                return
            if not chunk:
                return
            self.wfile.write(chunk)


class _UpstreamHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.requests: list[dict[str, str]] = []


class Upstream:
    """One HTTP server in a thread on 127.0.0.1 that answers with its own name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._server: _UpstreamHTTPServer | None = _UpstreamHTTPServer(name)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"upstream-{name}", daemon=True
        )
        self._thread.start()

    @property
    def requests(self) -> list[dict[str, str]]:
        """Return the path and lower-cased headers of every request this upstream received."""
        return self._server.requests if self._server is not None else []

    def stop(self) -> None:
        """Stop serving and close the listening socket, so that connections are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send one GET to 127.0.0.1:port on a fresh connection and return status, headers and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def upgrade_and_echo(port: int, path: str, payload: bytes, timeout: float = 5.0) -> tuple[str, bytes]:
    """Open a WebSocket-style upgrade through 127.0.0.1:port, send payload and return the head and the echo."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        sock.sendall(payload)
        echoed = rest
        while len(echoed) < len(payload):
            chunk = sock.recv(4096)
            if not chunk:
                break
            echoed += chunk
    return head.decode("latin-1"), echoed
