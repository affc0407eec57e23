"""Drive the web console (/vora/console/) in Chromium: its login, session panel and event timeline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from tests.harness.browser import Wait


@dataclass(frozen=True)
class LogRow:
    """One row of the console's timeline, as the page shows it."""

    kind: str
    type: str
    event_id: str
    sequence_number: str
    summary: str
    detail: dict[str, Any]


# Every row read in one call inside the page: a timeline that changes meanwhile (a bound dropping its oldest row)
# cannot leave a row read half, as reading it element by element did (a stale element), and one call is fast.
_READ_ROWS = """
return [...document.querySelectorAll('#log tbody.entry')].map((body) => ({
  kind: body.getAttribute('data-kind') || '',
  hidden: body.hidden,
  cells: [...body.querySelectorAll('tr.line td')].map((cell) => cell.textContent),
  detail: body.querySelector('tr.envelope pre').textContent,
}));
"""


def _row(read: dict[str, Any]) -> LogRow:
    texts = [str(text) for text in read["cells"]]
    return LogRow(str(read["kind"]), texts[1], texts[2], texts[3], texts[4], json.loads(str(read["detail"])))


class ConsolePage:
    """The console open in one browser tab."""

    def __init__(self, browser: webdriver.Chrome, wait: Wait, url: str) -> None:
        self.browser = browser
        self.wait = wait
        self.url = url

    def text(self, element_id: str) -> str:
        """Return the text content of the element with this id (shown or not)."""
        return str(self.browser.find_element(By.ID, element_id).get_attribute("textContent"))

    def click(self, element_id: str) -> None:
        """Click the element with this id once it can be clicked."""
        self.wait().until(ec.element_to_be_clickable((By.ID, element_id))).click()

    def open_with_token(self, access_token: str) -> None:
        """Load the console and log in by pasting an access token."""
        self.browser.get(self.url)
        self.wait().until(ec.visibility_of_element_located((By.ID, "paste")))
        # The page opens the paste box itself when it cannot offer Log in: wait until it has started.
        self.wait().until(lambda _: self.text("status") != "Loading…")
        paste = self.browser.find_element(By.ID, "paste")
        if paste.get_attribute("open") is None:
            paste.find_element(By.TAG_NAME, "summary").click()
        self.browser.find_element(By.ID, "paste-token").send_keys(access_token)
        self.click("use-token")
        self.wait().until(ec.visibility_of_element_located((By.ID, "app")))

    def open_stream(self, identity: str) -> None:
        """Choose the identity, set the session up and wait until the SDK says the stream is open."""
        self.wait().until(lambda _: identity in self.text("identity"))
        self.click("open")
        self.wait_state("open")

    def wait_state(self, state: str, timeout: float = 20.0) -> None:
        """Wait until the session panel shows this stream state."""
        self.wait(timeout).until(lambda _: self.text("state") == state)

    def _read_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.browser.execute_script(_READ_ROWS)
        return rows

    def rows(self) -> list[LogRow]:
        """Return every row of the timeline, newest first (filtered-out rows included)."""
        return [_row(read) for read in self._read_rows()]

    def shown_rows(self) -> list[LogRow]:
        """Return the rows the filters leave visible, newest first."""
        return [_row(read) for read in self._read_rows() if not read["hidden"]]

    def rows_of(self, row_type: str) -> list[LogRow]:
        """Return the rows of one type, newest first."""
        return [row for row in self.rows() if row.type == row_type]

    def wait_row(self, row_type: str, fragment: str = "", timeout: float = 20.0) -> LogRow:
        """Wait for a row of this type whose summary holds fragment, and return the newest such row."""

        def found(_: object) -> LogRow | Literal[False]:
            matching = [row for row in self.rows_of(row_type) if fragment in row.summary]
            return matching[0] if matching else False

        row: LogRow = self.wait(timeout).until(found)
        return row

    def event_rows(self, event_type: str) -> list[dict[str, Any]]:
        """Return the envelopes of stream events of this type on the timeline, oldest first."""
        return [row.detail for row in reversed(self.rows()) if row.kind == "event" and row.type == event_type]
