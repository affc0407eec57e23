"""Which transport a stream uses: the WebSocket, Server-Sent Events, or the WebSocket with fallback to SSE (auto).

The rule of auto, the same as the TypeScript SDK's (docs/clients.md, "The fallback rule"):
- an attempt on the WebSocket *could not pass* when it never opened and nothing answered (connection
  refused or reset, no answer within the timeout), or the answer was not VORA's (a non-101 without VORA's
  error shape, such as a proxy's 400/403/405/426/502 page), or VORA answered 400/426 to a handshake that
  reached it without its Upgrade header;
- VORA's own refusal of the handshake (its error shape, with 401, 403, 404, 429 or 503) is VORA's answer
  and is handled as such: it never counts, and it resets the count;
- after fallback_after (default 2) such attempts in a row, the same attempt probes SSE at once, with the
  same token and position;
- when the probe opens, VORA answers now, but it may have been away during the failures (restarting behind a
  proxy that answers 502 meanwhile, which looks like a blocked upgrade). So the probe is closed and the
  WebSocket tried once more, at once: if it opens, VORA had been away, and the stream stays on the WebSocket
  (the count starts again); if it could not pass again, the path blocks it, and SSE is opened again: its
  opening moves the stream to SSE, for the rest of its life (every reconnect and every new session), with a
  Fallback notice; VORA's own refusal of that retry is handled as any refusal, and resets the count;
- when the probe (or the SSE after the retry) fails, nothing was learnt about the path (a server that is
  down fails both): no fallback, the count starts again, and VORA's refusal of the probe (if VORA answered)
  or else the WebSocket's failure decides the wait before the next attempt, which starts on the WebSocket
  again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

from vora_client.errors import ConnectionFailed, VoraError
from vora_client.proxy import ProxySetting
from vora_client.sse import EventStreamTransport
from vora_client.transport import Connection, Transport, WebSocketTransport

TransportChoice = Literal["auto", "websocket", "sse"]
# Statuses with which VORA itself refuses a handshake it understood: the other transport would get the same.
VORA_REFUSALS = frozenset({401, 403, 404, 429, 503})
DEFAULT_FALLBACK_AFTER = 2


@dataclass(frozen=True)
class Fallback:
    """The stream moved from one transport to the next for good (from_: Python keeps `from` for itself)."""

    from_: str
    to: str
    failures: int  # attempts in a row that could not pass on from_ (the last one probed to)


class AutoTransport:
    """Open the WebSocket, moving to Server-Sent Events for good once SSE opened where the upgrade could not pass."""

    def __init__(self, websocket: Transport, sse: Transport, fallback_after: int = DEFAULT_FALLBACK_AFTER) -> None:
        if fallback_after < 1:
            raise ValueError("fallback_after must be at least 1")
        self._websocket = websocket
        self._sse = sse
        self._fallback_after = fallback_after
        self._on_sse = False
        self.failures = 0
        self.fallback: Fallback | None = None
        self.fallback_reason: str | None = None

    @property
    def name(self) -> str:
        """Return the name of the transport the next attempt uses."""
        return self._sse.name if self._on_sse else self._websocket.name

    async def open(self, token: str, last_event_id: str | None, timeout: float) -> Connection:
        """Open the WebSocket, or SSE after it could not pass fallback_after times in a row, by the module's rule."""
        if self._on_sse:
            return await self._sse.open(token, last_event_id, timeout)
        opened = await self._open_websocket(token, last_event_id, timeout)
        if not isinstance(opened, ConnectionFailed):
            return opened
        upgrade_failure = opened
        self.failures += 1
        if self.failures < self._fallback_after:
            raise upgrade_failure  # one failure may be noise: back off and try the WebSocket again
        failures, self.failures = self.failures, 0
        try:
            probe = await self._sse.open(token, last_event_id, timeout)
        except ConnectionFailed:
            raise upgrade_failure from None  # SSE could not pass either: nothing learnt, no fallback
        # VORA answers now; it may have been away while the upgrades failed (a proxy's 502 as it restarted).
        with contextlib.suppress(Exception):
            await probe.close()
        opened = await self._open_websocket(token, last_event_id, timeout)
        if not isinstance(opened, ConnectionFailed):
            return opened  # the WebSocket passes now: VORA had been away, the path never blocked it
        confirm_failure = opened
        try:
            connection = await self._sse.open(token, last_event_id, timeout)
        except ConnectionFailed:
            raise confirm_failure from None  # and now SSE could not pass either: nothing learnt, no fallback
        self._on_sse = True
        self.fallback = Fallback(self._websocket.name, self._sse.name, failures + 1)
        self.fallback_reason = f"the WebSocket upgrade failed: {confirm_failure}"
        return connection

    async def _open_websocket(
        self, token: str, last_event_id: str | None, timeout: float
    ) -> Connection | ConnectionFailed:
        """Open the WebSocket, or return why it could not pass; VORA's own refusal is raised (and resets the count)."""
        try:
            connection = await self._websocket.open(token, last_event_id, timeout)
        except VoraError as exc:
            if exc.status in VORA_REFUSALS:
                self.failures = 0  # VORA answered: the path passes
                raise
            return ConnectionFailed(f"the upgrade could not pass: {exc}", status=exc.status)
        except ConnectionFailed as exc:
            return exc
        self.failures = 0
        return connection


def choose_transport(
    choice: TransportChoice,
    ws_url: str,
    sse_url: str,
    fallback_after: int = DEFAULT_FALLBACK_AFTER,
    proxy: ProxySetting = True,
) -> Transport:
    """Build the transport a stream asked for: auto (WebSocket, then SSE when blocked), websocket, or sse."""
    if choice == "websocket":
        return WebSocketTransport(ws_url, proxy=proxy)
    if choice == "sse":
        return EventStreamTransport(sse_url, proxy=proxy)
    if choice == "auto":
        return AutoTransport(
            WebSocketTransport(ws_url, proxy=proxy), EventStreamTransport(sse_url, proxy=proxy), fallback_after
        )
    raise ValueError(f"transport must be 'auto', 'websocket' or 'sse', not {choice!r}")
