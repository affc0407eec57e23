"""VORA's Server-Sent Events channel (/vora/sse): an incremental event-stream parser and the transport built on it.

The parser follows the WHATWG event-stream interpretation rules, and keeps what httpx-sse drops:
comments, because VORA ends a stream with `: closed CODE REASON` where the socket would close
with CODE, and the SDK chooses its next step by that code.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from vora_client.errors import (
    ConnectionFailed,
    ProxyAuthenticationRequired,
    error_from_response,
    error_shape,
    retry_after_of,
)
from vora_client.proxy import ProxySetting, httpx_proxy_options, resolve_proxy
from vora_client.reconnect import ABNORMAL_CLOSURE
from vora_client.transport import Closed

EVENT_STREAM_TYPE = "text/event-stream"
MAX_REFUSAL_BYTES = 64 * 1024  # an error body is small; a proxy's page beyond this is not worth reading
_CLOSED_PREFIX = "closed "


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its data (lines joined by LF), type, and the last event ID when it was dispatched."""

    data: str
    event: str = "message"
    last_event_id: str = ""


@dataclass(frozen=True)
class Comment:
    """A comment line (`:` and what follows, without the colon and one leading space)."""

    text: str


class EventStreamParser:
    """Turn event-stream bytes, fed in any pieces, into events and comments, as an EventSource would."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # an unfinished line
        self._after_cr = False  # the last piece ended with CR: a LF opening the next piece belongs to it
        self._first_line = True
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent | Comment]:
        """Parse another piece of the body; return the events and comments it completed, in order."""
        return self._lines(self._decoder.decode(chunk))

    def end(self) -> list[ServerSentEvent | Comment]:
        """Finish the body: an unterminated line is processed, an event without its blank line is discarded."""
        out = self._lines(self._decoder.decode(b"", final=True))
        if self._pending:
            line, self._pending = self._pending, ""
            out += self._line(line)
        self._data, self._event = [], ""
        return out

    def _lines(self, text: str) -> list[ServerSentEvent | Comment]:
        out: list[ServerSentEvent | Comment] = []
        if not text:  # an empty read (or half a UTF-8 character) must not forget a pending CR
            return out
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # CRLF split across two pieces
        self._after_cr = text.endswith("\r")
        start = 0
        for index, char in enumerate(text):
            if char == "\n" and index > 0 and text[index - 1] == "\r":
                start = index + 1  # the LF of a CRLF whose CR already ended the line
                continue
            if char in "\r\n":
                line, self._pending = self._pending + text[start:index], ""
                out += self._line(line)
                start = index + 1
        self._pending += text[start:]
        return out

    def _line(self, line: str) -> list[ServerSentEvent | Comment]:
        if self._first_line:
            self._first_line = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return [Comment(line[1:].removeprefix(" "))]
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return []

    def _dispatch(self) -> list[ServerSentEvent | Comment]:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return []
        return [ServerSentEvent("\n".join(data), event or "message", self.last_event_id)]


def closing_code(comment: Comment) -> int | None:
    """Return the close code a `: closed CODE REASON` comment announces, or None for any other comment."""
    if not comment.text.startswith(_CLOSED_PREFIX):
        return None
    code = comment.text[len(_CLOSED_PREFIX) :].partition(" ")[0]
    return int(code) if code.isascii() and code.isdigit() else None


def event_stream_url(base_url: str) -> str:
    """Turn the REST base URL (http://host/vora) into the event stream's (http://host/vora/sse)."""
    parts = urlsplit(base_url.rstrip("/"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path + "/sse", "", ""))


def event_stream_url_beside(ws_url: str) -> str:
    """Turn the event WebSocket's URL (ws://host/vora/ws) into the event stream's beside it (http://host/vora/sse)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.removesuffix("/ws") + "/sse"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class _EventStreamConnection:
    """One open event stream: envelopes from its data, its end from the closing comment (or 1006 without one)."""

    def __init__(self, response: httpx.Response, http: httpx.AsyncClient, owns_http: bool) -> None:
        self._response = response
        self._http = http
        self._owns_http = owns_http
        self._chunks = response.aiter_bytes()
        self._parser = EventStreamParser()
        self._ready: list[ServerSentEvent | Comment] = []
        self._code: int | None = None
        self._closed = False

    @property
    def retry_ms(self) -> int | None:
        """Return the reconnect delay the server proposed (for EventSource; the SDK's ReconnectPolicy decides)."""
        return self._parser.retry_ms

    async def receive(self) -> str:
        """Return the next envelope, or raise Closed with the comment's code (1006 when the body just stopped)."""
        while True:
            if self._code is not None:
                await self.close()  # the connection is not the websockets kind: nobody else closes it
                raise Closed(self._code)
            while self._ready:
                item = self._ready.pop(0)
                if isinstance(item, ServerSentEvent):
                    return item.data
                self._code = closing_code(item)
                if self._code is not None:
                    break
            if self._code is not None:
                continue
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._ready += self._parser.end()
                if not self._ready:
                    self._code = ABNORMAL_CLOSURE
            except (httpx.TransportError, httpx.StreamError):
                self._code = ABNORMAL_CLOSURE
            else:
                self._ready += self._parser.feed(chunk)

    async def close(self) -> None:
        """Stop reading: close the response (and the HTTP client made for it); closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._response.aclose()
        if self._owns_http:
            with contextlib.suppress(Exception):
                await self._http.aclose()


class EventStreamTransport:
    """VORA's Server-Sent Events stream on httpx: the token in the Authorization header, the position in Last-Event-ID.

    Each open() uses its own HTTP connection (VORA ends the response with the stream), from the
    given httpx client or from one made for that connection alone, through proxy (vora_client.proxy's
    rule; a given httpx client keeps its own).
    """

    name = "sse"

    def __init__(self, url: str, *, http: httpx.AsyncClient | None = None, proxy: ProxySetting = True) -> None:
        self.url = url
        self._http = http
        self.proxy = resolve_proxy(url, proxy)

    async def open(self, token: str, last_event_id: str | None, timeout: float) -> _EventStreamConnection:
        """Open the stream (resuming after last_event_id), or raise the refusal as a typed error."""
        owns_http = self._http is None
        http = self._http or httpx.AsyncClient(**httpx_proxy_options(self.proxy))
        headers = {"Authorization": f"Bearer {token}", "Accept": EVENT_STREAM_TYPE, "Cache-Control": "no-store"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        # The timeout bounds the connect and the wait for the head; the body has no read timeout,
        # since missed heartbeats (the stream's heartbeat_timeout) tell a dead path.
        request = http.build_request(
            "GET", self.url, headers=headers, timeout=httpx.Timeout(timeout, read=None, pool=timeout)
        )
        try:
            try:
                async with asyncio.timeout(timeout):  # httpx's own timeouts bound each step, not the head
                    response = await http.send(request, stream=True)
            except httpx.ProxyError as exc:
                # httpcore words a refused CONNECT (https:// through a proxy) "STATUS REASON".
                if str(exc).startswith("407"):
                    raise ProxyAuthenticationRequired(f"{self.url}: the proxy answered {exc}") from exc
                raise ConnectionFailed(f"{self.url}: the proxy refused: {exc!r}") from exc
            except (httpx.TransportError, TimeoutError) as exc:
                raise ConnectionFailed(f"{self.url}: {exc!r}") from exc
            if response.status_code != 200:
                body = await _read_some(response)
                await response.aclose()
                if response.status_code == 407:  # VORA never sends it: the proxy of a plain http:// request
                    raise ProxyAuthenticationRequired(f"{self.url}: the proxy answered 407", response.headers)
                if error_shape(body) is None:  # not VORA's answer: a proxy's page, or nothing behind it
                    raise ConnectionFailed(
                        f"{self.url}: HTTP {response.status_code} without VORA's error shape",
                        status=response.status_code,
                        retry_after=retry_after_of(response.headers),
                    )
                raise error_from_response(response.status_code, body, response.headers)
            kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if kind != EVENT_STREAM_TYPE:
                await response.aclose()
                raise ConnectionFailed(f"{self.url}: answered {kind or 'no content type'}, not {EVENT_STREAM_TYPE}")
        except BaseException:
            if owns_http:
                await http.aclose()
            raise
        return _EventStreamConnection(response, http, owns_http)


async def _read_some(response: httpx.Response) -> bytes:
    body = b""
    with contextlib.suppress(httpx.TransportError, httpx.StreamError):
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= MAX_REFUSAL_BYTES:
                break
    return body[:MAX_REFUSAL_BYTES]
