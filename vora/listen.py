"""A tiny WebSocket client for the event channel, used by `vora listen`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import websocket


class ListenError(RuntimeError):
    """The socket could not be opened or closed abnormally."""


def listen_events(
    url: str,
    token: str,
    last_event_id: str | None = None,
    count: int | None = None,
    timeout: float | None = None,
    on_open: Callable[[], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield each event the server sends until it closes the socket, count is reached or timeout passes."""
    query = {"token": token, **({"lastEventId": last_event_id} if last_event_id else {})}
    try:
        ws = websocket.create_connection(f"{url}?{urlencode(query)}", timeout=timeout)
    except websocket.WebSocketBadStatusException as exc:
        body = exc.resp_body.decode(errors="replace") if exc.resp_body else ""
        raise ListenError(f"refused with HTTP {exc.status_code}: {body}") from None
    except OSError as exc:
        raise ListenError(f"cannot connect to {url}: {exc}") from None
    if on_open is not None:
        on_open()
    received = 0
    try:
        while count is None or received < count:
            try:
                frame = ws.recv()
            except websocket.WebSocketTimeoutException:
                return
            except websocket.WebSocketConnectionClosedException:
                return
            if not frame:
                return
            received += 1
            yield json.loads(frame)
    finally:
        ws.close()
