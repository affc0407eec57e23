"""Gunicorn's HTTP/1.1 request parser with bounds: bare LFs refused at once, chunked framing bounded and counted."""

from __future__ import annotations

import contextlib
import functools
import re
from typing import Any

from gunicorn.http.body import Body, ChunkedReader
from gunicorn.http.errors import NoMoreData, ParseException
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser

from vora.error_shape import RequestBodyTooLarge

# A chunk-size line (size and extensions) and a trailer section longer than these are refused. Clients
# send a few bytes of each; gunicorn alone waits for them without a bound and re-scans on every read.
CHUNK_LINE_LIMIT = 4 * 1024
TRAILERS_LIMIT = 8 * 1024
# A chunk size needs at most 16 significant hex digits (64 bits); more is an overflow, not a size.
CHUNK_SIZE_DIGITS = 16
HEX_DIGITS = b"0123456789abcdefABCDEF"
CR = 0x0D
BARE_LF = re.compile(rb"(?<!\r)\n")


class BareLineFeed(ParseException):  # type: ignore[misc] # gunicorn is untyped
    """A line of the request head ends in LF alone, not CRLF."""

    def __str__(self) -> str:
        return "a line of the request head ends in a bare LF instead of CRLF"


class MalformedChunk(OSError):
    """The chunked framing of a request body breaks the rules or the bounds."""


def read_line(unreader: Any, data: bytes, limit: int, what: str) -> tuple[bytes, bytes]:
    """Read up to a CRLF, at most limit bytes before it; return the line and what followed it."""
    buffered = bytearray(data)
    scanned = 0
    while (end := buffered.find(b"\n", scanned)) < 0:
        if len(buffered) > limit + 1:
            raise MalformedChunk(f"the {what} is longer than {limit} bytes")
        scanned = len(buffered)  # only what arrives next is searched: the work stays linear
        more = unreader.read()
        if not more:
            raise NoMoreData(bytes(buffered[-64:]))
        buffered += more
    if end == 0 or buffered[end - 1] != CR:
        raise MalformedChunk(f"the {what} ends in a bare LF instead of CRLF")
    if end - 1 > limit:
        raise MalformedChunk(f"the {what} is longer than {limit} bytes")
    return bytes(buffered[: end - 1]), bytes(buffered[end + 1 :])


def chunk_size_of(line: bytes) -> int:
    """Return the size a chunk-size line declares (its extensions ignored), or raise MalformedChunk."""
    size, semicolon, _extensions = line.partition(b";")
    if semicolon:
        size = size.rstrip(b" \t")  # RFC 9112 7.1.1: whitespace only before extensions
    if not size or size.translate(None, HEX_DIGITS):
        raise MalformedChunk(f"the chunk size {size[:16]!r} is not hexadecimal")
    if len(size.lstrip(b"0")) > CHUNK_SIZE_DIGITS:
        raise MalformedChunk(f"the chunk size has more than {CHUNK_SIZE_DIGITS} significant hex digits")
    return int(size, 16)


class BoundedChunkedReader(ChunkedReader):  # type: ignore[misc] # gunicorn is untyped
    """Gunicorn's chunked decoding with bounded lines and trailers, every byte of framing counted against a limit."""

    def __init__(self, req: Request, unreader: Any, limit: int) -> None:
        super().__init__(req, unreader)
        self.limit = limit
        self.received = 0

    def count(self, size: int) -> None:
        """Count bytes of the body as sent (data and framing), refusing it once they pass the limit."""
        self.received += size
        if self.received > self.limit:
            raise RequestBodyTooLarge(self.limit)

    def parse_chunk_size(self, unreader: Any, data: bytes | None = None) -> tuple[int, bytes | None]:
        """Read a chunk-size line; return the size and what followed it, reading the trailers after the last chunk."""
        line, rest = read_line(unreader, data or b"", CHUNK_LINE_LIMIT, "chunk-size line")
        self.count(len(line) + 2)
        size = chunk_size_of(line)
        if size == 0:
            with contextlib.suppress(NoMoreData):  # gunicorn's leniency: a client may close after the last chunk
                self.parse_trailers(unreader, rest)
            return 0, None
        self.count(size + 2)  # the data and its CRLF, refused before they are read when too many
        return size, rest

    def parse_trailers(self, unreader: Any, data: bytes) -> None:
        """Read the trailer section up to its empty line, at most TRAILERS_LIMIT bytes, and give back what follows."""
        fields: list[bytes] = []
        spent = 0
        while True:
            line, data = read_line(unreader, data, TRAILERS_LIMIT, "trailer section")
            spent += len(line) + 2
            if spent > TRAILERS_LIMIT:
                raise MalformedChunk(f"the trailer section is longer than {TRAILERS_LIMIT} bytes")
            self.count(len(line) + 2)
            if not line:
                break
            fields.append(line)
        if fields:
            self.req.trailers = self.req.parse_headers(b"\r\n".join(fields), from_trailer=True)
        unreader.unread(data)


class BoundedRequest(Request):  # type: ignore[misc] # gunicorn is untyped
    """Gunicorn's request that refuses a bare LF in its head at once and decodes chunked bodies with bounds."""

    body: Body

    def __init__(self, cfg: Any, unreader: Any, peer_addr: Any, req_number: int = 1, *, body_limit: int) -> None:
        self.body_limit = body_limit  # gunicorn parses the whole head in its __init__: set before it
        super().__init__(cfg, unreader, peer_addr, req_number)

    def get_data(self, unreader: Any, buf: Any, stop: bool = False) -> None:
        """Read more of the head, refusing a line that ends in a bare LF (gunicorn would wait for a CRLF)."""
        start = buf.tell()
        super().get_data(unreader, buf, stop)
        data: bytes = buf.getvalue()
        if data.startswith(b"\r\n"):
            return  # the head ended before this buffer: what follows is the body
        end = data.find(b"\r\n\r\n", max(0, start - 3))
        if BARE_LF.search(data, start, end if end >= 0 else len(data)):
            raise BareLineFeed()

    def set_body_reader(self) -> None:
        """Choose gunicorn's body reader, with the bounded one for a chunked body."""
        super().set_body_reader()
        if isinstance(self.body.reader, ChunkedReader):
            self.body = Body(BoundedChunkedReader(self, self.unreader, self.body_limit))


class BoundedRequestParser(RequestParser):  # type: ignore[misc] # gunicorn is untyped
    """Gunicorn's parser of a connection's requests, each a BoundedRequest with its listener's body limit."""

    def __init__(self, cfg: Any, source: Any, source_addr: Any) -> None:
        super().__init__(cfg, source, source_addr)
        self.mesg_class = functools.partial(BoundedRequest, body_limit=source.body_limit)
