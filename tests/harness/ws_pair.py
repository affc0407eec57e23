"""A real WebSocket over a socket pair: VORA's transport on one end, websocket-client on the other, no server."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import gevent.socket
import websocket

from tests.harness.ws_client import Client
from vora.ws.reactor import Reactor, worker_reactor
from vora.ws.transport import WebsocketTransport

HANDSHAKE_LIMIT = 16 * 1024


@dataclass
class SocketPair:
    """Both ends of one WebSocket: the server's transport and a checking client."""

    transport: WebsocketTransport
    client: Client
    server_socket: socket.socket


def _read_request(sock: socket.socket) -> dict[str, str]:
    """Read the client's HTTP upgrade request and return its headers as a WSGI environ has them."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = sock.recv(4096)
        if not chunk or len(request) > HANDSHAKE_LIMIT:
            raise ConnectionError("the client did not finish its handshake")
        request += chunk
    head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    environ = {}
    for line in head:
        name, _, value = line.partition(":")
        environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
    return environ


@contextlib.contextmanager
def socket_pair(
    ping_interval: float = 0, max_message_size: int = 4096, reactor: Reactor | None = None
) -> Iterator[SocketPair]:
    """Open a WebSocket upgraded and served by VORA's transport, to websocket-client.

    With a GeventReactor the server's end is a gevent socket (driven by this thread's hub, as in
    a worker) and the client keeps a plain one in its own thread.
    """
    server_sock: socket.socket
    if reactor is None:
        reactor = worker_reactor()
        server_sock, client_sock = socket.socketpair()
    else:
        server_sock, green_client = gevent.socket.socketpair()
        client_sock = socket.socket(fileno=green_client.detach())
    opened: dict[str, websocket.WebSocket] = {}

    def connect_client() -> None:
        opened["ws"] = websocket.create_connection("ws://pair.test/vora/ws", socket=client_sock, timeout=10)

    connecting = threading.Thread(target=connect_client)
    connecting.start()
    key = _read_request(server_sock)["HTTP_SEC_WEBSOCKET_KEY"]
    transport = WebsocketTransport.upgrade(
        server_sock, key, reactor, ping_interval=ping_interval, max_message_size=max_message_size
    )
    connecting.join(timeout=10)
    pair = SocketPair(transport, Client(opened["ws"]), server_sock)
    try:
        yield pair
    finally:
        pair.client.close()
        pair.transport.abort()
        pair.transport.release()
        with contextlib.suppress(OSError):
            server_sock.close()
