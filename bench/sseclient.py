"""The load generator's Server-Sent Events connection: GET /vora/sse read as a stream, shaped like a WebSocket.

`bench.wsclient.LoadClient` holds WebSockets from aiohttp; an event stream opened here offers it
the same face (`async for message in stream`, TEXT messages, `close()`, `close_code`), so every
command of the load generator (open, wait_primed, expect, resume, close, failover) works over
either transport in the same process, with the same pacing, retries and receipt timestamps.
Each message is read whole (`readuntil` a blank line) and handed on at once; `id:`, `retry:` and
comment lines are parsed as EventSource does, and the closing comment `: closed CODE REASON`
gives the close code a WebSocket close frame would.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

MESSAGE_LIMIT = 1 << 20  # the longest event-stream message read (a WebSocket message's max_msg_size)


def is_event_stream(url: str) -> bool:
    """Tell whether a load-generator URL names an event stream (/vora/sse) rather than a WebSocket."""
    return urlsplit(url).path.endswith("/sse")


@dataclass(frozen=True)
class StreamMessage:
    """One event-stream message carrying data, as a WebSocket TEXT message."""

    data: str
    type: aiohttp.WSMsgType = aiohttp.WSMsgType.TEXT


class EventStream:
    """An open text/event-stream response, read message by message."""

    compress = 0  # an event stream has no permessage-deflate

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.close_code: int | None = None
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def __aiter__(self) -> AsyncIterator[StreamMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[StreamMessage]:
        content = self._response.content
        try:
            while True:
                try:
                    raw = await content.readuntil(b"\n\n")
                except aiohttp.client_exceptions.ClientPayloadError:
                    break
                if not raw.endswith(b"\n\n"):
                    break  # the body ended (the server closed the stream) mid-message or cleanly
                message = self._parse(raw)
                if message is not None:
                    yield message
        finally:
            if self.close_code is None:
                self.close_code = 1006  # ended without saying why, as a WebSocket dropped without a close frame

    def _parse(self, raw: bytes) -> StreamMessage | None:
        """Read one message's fields; return its data, or None for a message without (retry, comments)."""
        data: list[str] = []
        for line in raw.decode().split("\n"):
            if not line:
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "id":
                self.last_event_id = value
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)
            elif name == "" and value.startswith("closed "):
                code = value.split()[1]
                self.close_code = int(code) if code.isdigit() else None
        return StreamMessage("\n".join(data)) if data else None

    async def close(self) -> None:
        """Close the stream from the client's side (the server sees EOF and ends it)."""
        self._response.close()


async def open_event_stream(session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> Any:
    """Open an event stream; raise aiohttp.ClientResponseError (status, headers) when it is refused."""
    response = await session.get(
        url,
        headers={"Accept": "text/event-stream", **(headers or {})},
        read_bufsize=MESSAGE_LIMIT,
        allow_redirects=False,
    )
    if response.status != 200:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await response.read()
        response.release()
        raise aiohttp.ClientResponseError(
            response.request_info,
            response.history,
            status=response.status,
            message=response.reason or "",
            headers=response.headers,
        )
    return EventStream(response)
