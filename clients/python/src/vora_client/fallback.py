"""Which transport a stream uses: the WebSocket, Server-Sent Events, or the WebSocket with fallback to SSE (auto).

The rule of auto (clients/python/README.md, "Transports"):
- every attempt starts on the WebSocket until a fallback has succeeded once;
- VORA's own refusal of the handshake (its error shape, with 401, 403, 404, 429 or 503) is VORA's
  answer and is handled as such: no fallback, since the stream would be refused the same way;
- any other failure of the upgrade (connection refused or reset, no answer within the timeout, a
  non-101 answer without VORA's error shape such as a proxy's 400/403/405/426/502, or VORA's 400/426
  for a handshake that reached it without its Upgrade header) makes the same attempt try SSE at once,
  with the same token and position;
- when that SSE stream opens, the stream stays on SSE for the rest of its life (every reconnect and
  every new session); when it fails too, nothing was learnt about the path: its refusal (if VORA
  answered) or the WebSocket's failure is reported, and the next attempt starts on the WebSocket again.
"""

from __future__ import annotations

from typing import Literal

from vora_client.errors import ConnectionFailed, VoraError
from vora_client.sse import EventStreamTransport
from vora_client.transport import Connection, Transport, WebSocketTransport

TransportChoice = Literal["auto", "websocket", "sse"]
# Statuses with which VORA itself refuses a handshake it understood: the other transport would get the same.
VORA_REFUSALS = frozenset({401, 403, 404, 429, 503})


class AutoTransport:
    """Open the WebSocket, falling back to Server-Sent Events for good when the upgrade cannot pass."""

    def __init__(self, websocket: Transport, sse: Transport) -> None:
        self._websocket = websocket
        self._sse = sse
        self._on_sse = False
        self.fallback_reason: str | None = None

    @property
    def name(self) -> str:
        """Return the name of the transport the next attempt uses."""
        return self._sse.name if self._on_sse else self._websocket.name

    async def open(self, token: str, last_event_id: str | None, timeout: float) -> Connection:
        """Open the WebSocket, or SSE when the upgrade failed (or failed before), by the module's rule."""
        if self._on_sse:
            return await self._sse.open(token, last_event_id, timeout)
        try:
            return await self._websocket.open(token, last_event_id, timeout)
        except VoraError as exc:
            if exc.status in VORA_REFUSALS:
                raise
            upgrade_failure: Exception = exc
        except ConnectionFailed as exc:
            upgrade_failure = exc
        try:
            connection = await self._sse.open(token, last_event_id, timeout)
        except ConnectionFailed:
            raise upgrade_failure from None
        self._on_sse = True
        self.fallback_reason = f"the WebSocket upgrade failed: {upgrade_failure}"
        return connection


def choose_transport(choice: TransportChoice, ws_url: str, sse_url: str) -> Transport:
    """Build the transport a stream asked for: auto (WebSocket, then SSE when blocked), websocket, or sse."""
    if choice == "websocket":
        return WebSocketTransport(ws_url)
    if choice == "sse":
        return EventStreamTransport(sse_url)
    if choice == "auto":
        return AutoTransport(WebSocketTransport(ws_url), EventStreamTransport(sse_url))
    raise ValueError(f"transport must be 'auto', 'websocket' or 'sse', not {choice!r}")
