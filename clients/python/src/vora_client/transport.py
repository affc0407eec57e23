"""How the event stream reaches the client: the Transport protocol, and the WebSocket transport (sse.py: the other)."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidProxyStatus, InvalidStatus

from vora_client.errors import (
    ConnectionFailed,
    ProxyAuthenticationRequired,
    error_from_response,
    error_shape,
    retry_after_of,
)
from vora_client.proxy import ProxySetting, resolve_proxy
from vora_client.reconnect import ABNORMAL_CLOSURE

MAX_MESSAGE_BYTES = 1 << 20
CLOSE_HANDSHAKE_TIMEOUT = 1.0


class Closed(Exception):
    """The connection ended; code is the WebSocket close code (1006 when it was cut without one)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class Connection(Protocol):
    """One open event connection."""

    async def receive(self) -> str:
        """Return the next message, or raise Closed."""
        ...

    async def close(self) -> None:
        """Close the connection from the client's side."""
        ...


class Transport(Protocol):
    """Opens event connections for a session's token."""

    @property
    def name(self) -> str:
        """Return the transport's name as StateChange records it ("websocket", "sse")."""
        ...

    async def open(self, token: str, last_event_id: str | None, timeout: float) -> Connection:
        """Open a connection, or raise a VoraError for a refusal or ConnectionFailed when nothing answered."""
        ...


def websocket_url(base_url: str) -> str:
    """Turn the REST base URL (http://host/vora) into the event WebSocket's (ws://host/vora/ws)."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path + "/ws", "", ""))


class _WebSocketConnection:
    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket

    async def receive(self) -> str:
        try:
            message = await self._socket.recv()
        except ConnectionClosed as exc:
            raise Closed(exc.rcvd.code if exc.rcvd is not None else ABNORMAL_CLOSURE) from None
        return message if isinstance(message, str) else message.decode()

    async def close(self) -> None:
        await self._socket.close()


class WebSocketTransport:
    """VORA's event WebSocket: the token rides in the Authorization header, never in a URL that proxies log.

    Through a forward proxy (proxy: vora_client.proxy's rule) the socket is tunnelled with CONNECT.
    """

    name = "websocket"

    def __init__(self, url: str, *, proxy: ProxySetting = True) -> None:
        self.url = url
        self.proxy = resolve_proxy(url, proxy)

    async def open(self, token: str, last_event_id: str | None, timeout: float) -> Connection:
        """Open the socket (resuming after last_event_id), or raise the refusal as a typed error."""
        url = f"{self.url}?{urlencode({'lastEventId': last_event_id})}" if last_event_id else self.url
        try:
            socket = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=timeout,
                # VORA pings and the client only answers (websockets does): clients send nothing else.
                ping_interval=None,
                max_size=MAX_MESSAGE_BYTES,
                compression=None,
                proxy=self.proxy,
                # A peer that is gone (a dead link, a suspended path) never answers the close handshake: give up
                # and abort the TCP connection after 1 s, not websockets' 10 s, so the stream moves on.
                close_timeout=CLOSE_HANDSHAKE_TIMEOUT,
            )
        except InvalidProxyStatus as exc:  # the proxy refused the CONNECT: nothing reached VORA
            status = exc.response.status_code
            if status == 407:
                raise ProxyAuthenticationRequired(
                    f"{self.url}: the proxy answered 407 to CONNECT", exc.response.headers
                ) from None
            raise ConnectionFailed(
                f"{self.url}: the proxy answered HTTP {status} to CONNECT",
                status=status,
                retry_after=retry_after_of(exc.response.headers),
            ) from None
        except InvalidStatus as exc:
            response = exc.response
            body = bytes(response.body or b"")
            if error_shape(body) is None:  # not VORA's answer: a proxy refused the upgrade, or nothing is behind it
                raise ConnectionFailed(
                    f"{self.url}: the upgrade was answered HTTP {response.status_code} without VORA's error shape",
                    status=response.status_code,
                    retry_after=retry_after_of(response.headers),
                ) from None
            raise error_from_response(response.status_code, body, response.headers) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectionFailed(f"{self.url}: {exc!r}") from exc
        return _WebSocketConnection(socket)
