"""The benchmark's result table and the notes printed under it."""

from __future__ import annotations

from bench.report import Row, note_lines, table_lines

LAGGING = Row(
    "11 HTTP publish-to-socket p99",
    77.0,
    "ms",
    72.1,
    "<= 1.5 x Python publisher",
    False,
    note="the HTTP publisher fell behind its schedule by up to 2057 ms",
)
BREAKDOWN = Row("2 Redis RTT: GET /identity [smembers 1]", 1.0, "", None, "<= 1", True, note="smembers 1")
PLAIN = Row("1 GET /identity peak", 3465.0, "req/s", 4110.0, ">= 0.7 x baseline", True)


def test_a_note_the_cells_cannot_show_is_listed_under_the_table() -> None:
    """A row met within its ratio yet marked NO says why in a line of its own."""
    assert note_lines([PLAIN, LAGGING]) == [
        "- 11 HTTP publish-to-socket p99: the HTTP publisher fell behind its schedule by up to 2057 ms"
    ]


def test_a_note_already_in_the_rows_name_is_not_repeated() -> None:
    """The Redis round trips' breakdown, already in brackets in the row's name, gets no line of its own."""
    assert note_lines([BREAKDOWN, PLAIN]) == []


def test_the_markdown_table_has_one_line_per_row_and_the_ratio() -> None:
    """Each row becomes one Markdown line with its ratio to the same run's baseline and its verdict."""
    lines = table_lines([PLAIN, LAGGING], markdown=True)
    assert lines[0] == "| scenario | measured | baseline | ratio | target | met? |"
    assert lines[2] == "| 1 GET /identity peak | 3,465 req/s | 4,110 req/s | 0.84 | >= 0.7 x baseline | yes |"
    assert lines[3].endswith("| 77.0 ms | 72.1 ms | 1.07 | <= 1.5 x Python publisher | NO |")
    assert len(lines) == 4
