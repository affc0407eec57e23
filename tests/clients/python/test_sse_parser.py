"""Tests of the SDK's event-stream parser on the inputs that break naive ones."""

from __future__ import annotations

import pytest
from vora_client import Comment, EventStreamParser, ServerSentEvent
from vora_client.sse import closing_code, event_stream_url, event_stream_url_beside

Item = ServerSentEvent | Comment

VORA_STREAM = (
    b"retry: 7312\n\n"
    b'data: {"type":"heartbeat","eventId":null}\n\n'
    b"id: 1795396666123-0\n"
    b'data: {"type":"callRinging","eventId":"1795396666123-0","data":{"note":"\xc3\xa9t\xc3\xa9"}}\n\n'
    b'data: {"type":"channelTerminated","data":{"reason":"logout"}}\n\n'
    b": closed 1000 logout\n\n"
)


def parse_in_pieces(body: bytes, size: int) -> tuple[list[Item], EventStreamParser]:
    """Feed body in pieces of size bytes and return everything parsed, with the parser."""
    parser = EventStreamParser()
    items: list[Item] = []
    for start in range(0, len(body), size):
        items += parser.feed(body[start : start + size])
    items += parser.end()
    return items, parser


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_a_vora_stream_parses_the_same_whatever_the_pieces(size: int) -> None:
    """Split anywhere (inside a UTF-8 character, a field name, a line end), the stream gives the same items."""
    items, parser = parse_in_pieces(VORA_STREAM, size)
    assert [type(item) for item in items] == [ServerSentEvent, ServerSentEvent, ServerSentEvent, Comment]
    heartbeat, ringing, terminated, comment = items
    assert isinstance(heartbeat, ServerSentEvent)
    assert heartbeat.last_event_id == ""
    assert isinstance(ringing, ServerSentEvent)
    assert ringing.last_event_id == "1795396666123-0"
    assert "été" in ringing.data
    assert isinstance(terminated, ServerSentEvent)
    assert terminated.last_event_id == "1795396666123-0"  # the ID persists until another id: line
    assert isinstance(comment, Comment)
    assert closing_code(comment) == 1000
    assert parser.retry_ms == 7312


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"])
@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_every_line_ending_is_a_line_ending_even_split_across_reads(newline: bytes, size: int) -> None:
    """CRLF, CR and LF all end lines; a CRLF split between two reads is one line end, not two."""
    body = VORA_STREAM.replace(b"\n", newline)
    items, parser = parse_in_pieces(body, size)
    reference, _ = parse_in_pieces(VORA_STREAM, 10_000)
    assert items == reference
    assert parser.retry_ms == 7312


def test_multi_line_data_is_joined_with_line_feeds() -> None:
    """Several data: lines make one event whose data is joined by LF, without a trailing LF."""
    items, _ = parse_in_pieces(b"data: first\ndata:second\r\ndata:  third\ndata\n\n", 3)
    assert items == [ServerSentEvent("first\nsecond\n third\n")]


def test_comments_fields_and_odd_lines() -> None:
    """Comments are kept, unknown fields ignored, event: names the type, a bad retry or an id with NUL is ignored."""
    body = (
        b"\xef\xbb\xbf: opening comment\n"
        b":no-space\n"
        b"event: custom\nunknown: x\nretry: 12a\nid: bad\x00id\ndata: one\n\n"
        b"retry: 250\nid: 5-1\ndata: two\n\n"
        b"data: three\n\n"
    )
    items, parser = parse_in_pieces(body, 4)
    assert items == [
        Comment("opening comment"),
        Comment("no-space"),
        ServerSentEvent("one", "custom", ""),
        ServerSentEvent("two", "message", "5-1"),
        ServerSentEvent("three", "message", "5-1"),
    ]
    assert parser.retry_ms == 250


def test_an_event_without_its_blank_line_is_not_dispatched() -> None:
    """A body cut in the middle of an event (or after its last data line) yields nothing for it."""
    items, _ = parse_in_pieces(b"data: whole\n\ndata: cut", 5)
    assert items == [ServerSentEvent("whole")]
    items, _ = parse_in_pieces(b"data: whole\n\ndata: cut\n", 5)
    assert items == [ServerSentEvent("whole")]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    """Blank lines alone, or an id without data, give no event (but the id is kept)."""
    items, parser = parse_in_pieces(b"\n\n\nid: 9-9\n\n\n", 1)
    assert items == []
    assert parser.last_event_id == "9-9"


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    """A byte sequence that is not UTF-8 becomes U+FFFD, as an EventSource decodes it."""
    items, _ = parse_in_pieces(b"data: a\xffb\n\n", 2)
    assert items == [ServerSentEvent("a\ufffdb")]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("closed 1000 logout", 1000),
        ("closed 4401 ", 4401),
        ("closed 1001", 1001),
        ("closed soon", None),
        ("heartbeat", None),
        ("closed", None),
    ],
)
def test_the_closing_comment_names_its_code(text: str, code: int | None) -> None:
    """`: closed CODE REASON` gives CODE; other comments give none."""
    assert closing_code(Comment(text)) == code


def test_stream_urls_sit_beside_the_rest_of_the_api() -> None:
    """The SSE URL is /vora/sse under the REST base, or beside the WebSocket's /vora/ws."""
    assert event_stream_url("https://vora.example/vora/") == "https://vora.example/vora/sse"
    assert event_stream_url_beside("wss://vora.example/vora/ws") == "https://vora.example/vora/sse"
    assert event_stream_url_beside("ws://127.0.0.1:8/vora/ws") == "http://127.0.0.1:8/vora/sse"
