"""The web console, on the TypeScript SDK, in headless Chromium against the real provider and the real VORA server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select

from testbed.ports import free_port
from testbed.vora_server import RunningServer, running_server
from testbed.wait import wait_for
from tests.harness.browser import Wait, set_offline, sign_in_on_provider_page
from tests.harness.console_page import ConsolePage, LogRow
from tests.harness.devauth import DevAuth
from tests.harness.oauth import IDENTITY, PASSWORD, USER, WEB_CLIENT, console_url, new_provider, oauth_env
from tests.harness.oauth_flow import authorization_code_login
from tests.harness.server_api import SERVER_KEY, end_sessions, list_sessions
from tests.harness.tokens import AUDIENCE
from tests.harness.ws_client import make_publisher
from vora.auth.devkeys import mint_token
from vora.core.settings import DEFAULT_CONSOLE_SDK
from vora.events.publisher import EventPublisher

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.oauth]


@pytest.fixture(scope="module")
def console_server(
    redis_proc: Any, provider: DevAuth, vora_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Serve VORA trusting the provider, with the server API on, for the whole module."""
    if not DEFAULT_CONSOLE_SDK.is_file():
        pytest.fail(f"the console's SDK bundle {DEFAULT_CONSOLE_SDK} is missing: `make sdk` builds it")
    env = oauth_env(redis_proc, provider, VORA_JWKS_REFRESH_INTERVAL="1", VORA_SERVER_API_KEYS=SERVER_KEY)
    with running_server(env, tmp_path_factory.mktemp("console-server"), port=vora_port) as running:
        yield running


@pytest.fixture(scope="module")
def simulator_server(
    redis_proc: Any, provider: DevAuth, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Serve VORA with the development simulator on (as `make run` does), for the whole module."""
    env = oauth_env(redis_proc, provider, VORA_CONSOLE_SIMULATOR="1", VORA_SERVER_API_KEYS=SERVER_KEY)
    with running_server(env, tmp_path_factory.mktemp("simulator-server")) as running:
        yield running


@pytest.fixture(scope="module")
def access_token(provider: DevAuth, console_server: RunningServer) -> str:
    """Return a user access token from the provider (the login flow over HTTP, as the page would run it)."""
    redirect = console_url(console_server.port)
    tokens = authorization_code_login(provider.discovery(), WEB_CLIENT, redirect, USER, PASSWORD)
    return tokens.access_token


@pytest.fixture
def page(browser: webdriver.Chrome, wait: Wait, console_server: RunningServer) -> ConsolePage:
    """Return the console page of the module's server in this test's browser."""
    return ConsolePage(browser, wait, console_url(console_server.port))


@pytest.fixture
def publisher(redis_proc: Any) -> EventPublisher:
    """Publish events to the module's Redis as the telephony side does."""
    return make_publisher(redis.Redis(host=redis_proc.host, port=redis_proc.port))


def sockets_of(server: RunningServer, identity: str) -> int:
    """Return how many sockets the identity has open, as the server API counts them."""
    answer = requests.get(
        f"{server.server_api_url}/identities/{identity}/online",
        headers={"Authorization": f"Bearer {SERVER_KEY}"},
        timeout=5,
    )
    sockets: int = answer.json()["sockets"]
    return sockets


def no_policy_violations(browser: webdriver.Chrome) -> list[str]:
    """Return the browser log's Content-Security-Policy violations (none expected)."""
    return [entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]


def test_console_logs_in_subscribes_receives_resumes_and_logs_out(
    browser: webdriver.Chrome,
    wait: Wait,
    provider: DevAuth,
    console_server: RunningServer,
    owns: Callable[..., None],
    publisher: EventPublisher,
) -> None:
    """A user logs in on the provider's page, opens a stream, subscribes, sees events, resumes, logs out."""
    owns(USER)
    page = ConsolePage(browser, wait, console_url(console_server.port))
    browser.get(page.url)
    wait().until(ec.text_to_be_present_in_element((By.ID, "login-help"), provider.issuer))
    page.click("login")
    sign_in_on_provider_page(browser, wait, provider)

    wait().until(ec.text_to_be_present_in_element((By.ID, "who"), f"signed in as {USER}"))
    page.open_stream(IDENTITY)
    page.wait_row("setup", f"session set up on {IDENTITY}")
    page.click("subscribe-all")  # off: choose the types
    for box in browser.find_elements(By.CSS_SELECTOR, "input[name=event-type]:checked"):
        if box.get_attribute("value") != "callRinging":
            box.click()
    page.click("subscribe")
    wait().until(ec.text_to_be_present_in_element((By.ID, "status"), "Subscribed to callRinging."))
    assert page.text("fact-subscription") == "callRinging"

    publisher.publish(IDENTITY, "presence", {"status": "busy"})  # not subscribed: never shown
    first = publisher.publish(IDENTITY, "callRinging", {"callId": "c-1", "from": "+34602128708"})
    wait().until(lambda _: page.event_rows("callRinging"))
    (shown,) = page.event_rows("callRinging")
    assert shown["eventId"] == first.event_id
    assert shown["sequenceNumber"] == first.sequence_number
    assert shown["identity"] == IDENTITY
    assert shown["data"] == {"callId": "c-1", "from": "+34602128708"}

    page.click("drop")
    page.wait_row("connection", "closed 4008")
    second = publisher.publish(IDENTITY, "callRinging", {"callId": "c-2", "from": "+34602128708"})
    page.wait_row("connection", f"open after {first.event_id}")
    wait().until(lambda _: len(page.event_rows("callRinging")) == 2)
    assert [e["eventId"] for e in page.event_rows("callRinging")] == [first.event_id, second.event_id]
    assert page.event_rows("presence") == []

    page.click("logout")
    wait().until(ec.text_to_be_present_in_element((By.ID, "status"), "Logged out (the stream ended: logout)."))
    assert browser.current_url == console_url(console_server.port)
    # The provider's logout reloaded the page, and the timeline came back with it: the last word stays visible.
    assert page.rows_of("channelTerminated")[0].summary.startswith("reason logout")
    assert page.rows_of("closed")[0].summary.startswith("stream closed: logout")
    assert len(page.event_rows("callRinging")) == 2
    # The provider's session ended too: logging in again asks for the password.
    page.click("login")
    wait().until(ec.visibility_of_element_located((By.ID, "password")))
    assert no_policy_violations(browser) == []


def test_setting_up_needs_no_click_on_list_my_identities(
    page: ConsolePage, access_token: str, owns: Callable[..., None]
) -> None:
    """After login the identities are listed already, and the stream opens without asking for them first."""
    owns(USER)
    page.open_with_token(access_token)
    page.wait().until(lambda _: page.text("identity") == IDENTITY)
    assert page.browser.find_element(By.ID, "open").is_enabled()
    page.click("open")
    page.wait_state("open")


def test_clicking_open_twice_opens_one_stream(
    page: ConsolePage,
    access_token: str,
    owns: Callable[..., None],
    console_server: RunningServer,
    publisher: EventPublisher,
) -> None:
    """Two clicks on "Set up and open" in a row open one connection, and each event shows once."""
    owns(USER)
    page.open_with_token(access_token)
    page.wait().until(lambda _: page.text("identity") == IDENTITY)
    page.browser.execute_script("const b = document.getElementById('open'); b.click(); b.click();")
    page.wait_state("open")
    published = publisher.publish(IDENTITY, "callRinging", {"callId": "c-once"})
    page.wait().until(lambda _: page.event_rows("callRinging"))
    assert sockets_of(console_server, IDENTITY) == 1
    assert [e["eventId"] for e in page.event_rows("callRinging")] == [published.event_id]
    assert len(page.rows_of("setup")) == 1
    assert len([row for row in page.rows_of("connection") if "connecting" in row.summary]) == 1


def test_a_session_ended_by_the_server_api_is_set_up_again_not_retried_against_401s(
    page: ConsolePage,
    access_token: str,
    owns: Callable[..., None],
    console_server: RunningServer,
    publisher: EventPublisher,
) -> None:
    """After channelTerminated(disconnected) the SDK sets the session up again once, with jitter, and carries on."""
    owns(USER)
    page.open_with_token(access_token)
    page.open_stream(IDENTITY)
    end_sessions(console_server.server_api_url, SERVER_KEY, IDENTITY, "disconnected")
    assert page.wait_row("channelTerminated").summary.startswith("reason disconnected")
    reconnecting = page.wait_row("reconnecting", "setting the session up again")
    assert 0 <= reconnecting.detail["delayMs"] <= 1000  # uniform(0, 1 s): jittered, not a fixed second
    page.wait().until(lambda _: len(page.rows_of("setup")) == 2)
    page.wait_state("open")
    published = publisher.publish(IDENTITY, "callAnswered", {"callId": "c-after"})
    page.wait().until(lambda _: page.event_rows("callAnswered"))
    assert page.event_rows("callAnswered")[0]["eventId"] == published.event_id
    attempts = [row for row in page.rows_of("connection") if "connecting" in row.summary]
    assert len(attempts) == 2, [row.summary for row in page.rows_of("connection")]
    assert [row for row in page.rows_of("connection") if "refused 401" in row.summary] == []


def test_subscription_boxes_show_subscribe_all_after_setup(
    page: ConsolePage, access_token: str, owns: Callable[..., None]
) -> None:
    """A new session receives every event, and the subscription panel says so: subscribeAll and every type checked."""
    owns(USER)
    page.open_with_token(access_token)
    page.wait().until(lambda _: page.text("identity") == IDENTITY)
    page.click("subscribe-all")  # edited before setup, never applied: the boxes must come back to the truth
    page.browser.find_element(By.CSS_SELECTOR, 'input[value="presence"]').click()
    assert not page.browser.find_element(By.ID, "subscribe-all").is_selected()
    page.open_stream(IDENTITY)
    page.wait_row("setup")
    page.wait().until(lambda _: page.browser.find_element(By.ID, "subscribe-all").is_selected())
    boxes = page.browser.find_elements(By.CSS_SELECTOR, "input[name=event-type]")
    assert boxes
    assert all(box.is_selected() for box in boxes)
    assert page.text("fact-subscription") == "subscribeAll"


def test_logging_out_keeps_the_timeline(page: ConsolePage, access_token: str, owns: Callable[..., None]) -> None:
    """Logging out ends the stream with channelTerminated(logout), and that row stays on the timeline."""
    owns(USER)
    page.open_with_token(access_token)
    page.open_stream(IDENTITY)
    page.click("logout")
    page.wait().until(ec.text_to_be_present_in_element((By.ID, "status"), "Logged out (the stream ended: logout)."))
    assert not page.browser.find_element(By.ID, "app").is_displayed()
    terminated = page.browser.find_element(By.CSS_SELECTOR, '#log tbody[data-type="channelTerminated"] tr.line')
    assert terminated.is_displayed()
    assert "reason logout" in terminated.text
    assert page.rows_of("closed")[0].summary.startswith("stream closed: logout")
    page.open_with_token(access_token)  # a reload, and a new login: the timeline is still there
    assert page.rows_of("channelTerminated")[0].summary.startswith("reason logout")


def rows_since(page: ConsolePage, row_type: str, fragment: str) -> list[LogRow]:
    """Return the rows newer than the newest row of this type whose summary holds fragment, newest first."""
    rows = page.rows()
    mark = next(index for index, row in enumerate(rows) if row.type == row_type and fragment in row.summary)
    return rows[:mark]


def test_logging_out_while_reconnecting_stops_the_stream_at_once(
    page: ConsolePage, access_token: str, owns: Callable[..., None], console_server: RunningServer
) -> None:
    """A stream that falls to reconnecting during Log out stops there: no attempt, no new session after the logout."""
    owns(USER)
    page.open_with_token(access_token)
    page.open_stream(IDENTITY)
    # The connection drops as the user clicks Log out: the SDK would reconnect within a second.
    page.browser.execute_script("document.getElementById('drop').click(); document.getElementById('logout').click();")
    page.wait().until(ec.text_to_be_present_in_element((By.ID, "status"), "Logged out"))
    after = rows_since(page, "console", "logging out of")
    assert [row.summary for row in after if row.type in ("setup", "connection")] == [
        'websocket: closed 4008 "dropped by the console"'
    ]
    assert list_sessions(console_server.server_api_url, SERVER_KEY, IDENTITY) == []
    said = page.text("status")
    assert said == "Logged out (the stream was reconnecting: it stopped here, and VORA ended the session)."


def test_logging_out_offline_says_vora_did_not_hear_it(
    page: ConsolePage, access_token: str, owns: Callable[..., None], console_server: RunningServer
) -> None:
    """Logged out while offline, the console says VORA still holds the session, instead of a plain "Logged out"."""
    owns(USER)
    page.open_with_token(access_token)
    page.open_stream(IDENTITY)
    set_offline(page.browser, True)
    page.wait_state("reconnecting")
    page.click("logout")
    page.wait().until(ec.text_to_be_present_in_element((By.ID, "status"), "Logged out"))
    said = page.text("status")
    assert said.startswith("Logged out here, but VORA did not hear it (POST /logout/910111000 got no answer")
    assert f"the session of {IDENTITY} stays stored there until it expires" in said
    assert page.browser.find_element(By.ID, "status").get_attribute("class") == "error"
    after = rows_since(page, "console", "logging out of")
    assert [row.summary for row in after if row.type == "connection" and "connecting" in row.summary] == []
    set_offline(page.browser, False)
    assert len(list_sessions(console_server.server_api_url, SERVER_KEY, IDENTITY)) == 1  # what the page said


def test_timeline_is_newest_first_expands_filters_pauses_clears_and_exports(
    page: ConsolePage,
    access_token: str,
    owns: Callable[..., None],
    publisher: EventPublisher,
    tmp_path: Path,
) -> None:
    """The timeline lists newest first, expands to the envelope, filters by type and text, pauses, clears, exports."""
    owns(USER)
    browser = page.browser
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    page.open_with_token(access_token)
    page.open_stream(IDENTITY)
    ringing = publisher.publish(IDENTITY, "callRinging", {"callId": "c-10", "from": "+34600000001"})
    answered = publisher.publish(IDENTITY, "callAnswered", {"callId": "c-10"})
    page.wait().until(lambda _: page.event_rows("callAnswered"))
    newest = next(row for row in page.rows() if row.kind == "event")
    assert (newest.type, newest.event_id, newest.sequence_number) == (
        "callAnswered",
        answered.event_id,
        str(answered.sequence_number),
    )
    assert "callId=c-10" in newest.summary
    # Lifecycle rows (the SDK's state changes, the connection) share the timeline, marked apart.
    lifecycle = browser.find_elements(By.CSS_SELECTOR, "#log tbody.lifecycle")
    assert {b.get_attribute("data-type") for b in lifecycle} >= {"state", "setup", "connection"}
    first_line = browser.find_element(By.CSS_SELECTOR, "#log tbody.entry tr.line")
    envelope = browser.find_element(By.CSS_SELECTOR, "#log tbody.entry tr.envelope")
    assert not envelope.is_displayed()
    first_line.click()
    assert envelope.is_displayed()
    assert json.loads(envelope.text)["eventId"] == answered.event_id

    Select(browser.find_element(By.ID, "log-type")).select_by_value("callRinging")
    assert [row.event_id for row in page.shown_rows()] == [ringing.event_id]
    Select(browser.find_element(By.ID, "log-type")).select_by_value(":lifecycle")
    assert {row.kind for row in page.shown_rows()} == {"lifecycle"}
    Select(browser.find_element(By.ID, "log-type")).select_by_value("")
    browser.find_element(By.ID, "log-text").send_keys("+34600000001")
    assert [row.event_id for row in page.shown_rows()] == [ringing.event_id]
    browser.find_element(By.ID, "log-text").clear()
    browser.execute_script("document.getElementById('log-text').dispatchEvent(new Event('input'))")

    page.click("log-pause")
    held = publisher.publish(IDENTITY, "callEnded", {"callId": "c-10"})
    pause = page.browser.find_element(By.ID, "log-pause")
    page.wait().until(lambda _: "callEnded" in str(pause.get_attribute("title")))
    assert page.text("log-pause").startswith("Resume (")
    assert page.event_rows("callEnded") == []
    page.click("log-pause")
    assert [e["eventId"] for e in page.event_rows("callEnded")] == [held.event_id]

    page.click("log-export")
    exported = wait_for(lambda: next(iter(tmp_path.glob("vora-console-*.jsonl")), None), timeout=10)
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [line["eventId"] for line in lines if line["kind"] == "event"] == [
        ringing.event_id,
        answered.event_id,
        held.event_id,
    ]
    assert {"time", "kind", "type", "summary", "detail"} <= set(lines[0])

    page.click("log-clear")
    assert page.rows() == []
    page.wait().until(lambda _: page.text("log-count") == "(0 shown of 0)")
    assert no_policy_violations(browser) == []  # the download (a blob: URL) included


def test_rows_and_refresh_buttons_tell_assistive_technology_what_they_are(
    page: ConsolePage, access_token: str, owns: Callable[..., None], publisher: EventPublisher
) -> None:
    """A timeline row says whether its envelope is shown and toggles it by keyboard; each ↻ button has a name."""
    owns(USER)
    page.open_with_token(access_token)
    page.open_stream(IDENTITY)
    assert page.browser.find_element(By.ID, "load-identities").accessible_name == "List my identities again"
    refresh = page.browser.find_element(By.ID, "server-refresh")
    assert refresh.get_attribute("aria-label") == "Ask VORA for the stored sessions again"  # shown with the simulator
    publisher.publish(IDENTITY, "callAnswered", {"callId": "c-keys"})
    page.wait().until(lambda _: page.event_rows("callAnswered"))
    body = page.browser.find_element(By.CSS_SELECTOR, '#log tbody[data-type="callAnswered"]')
    line = body.find_element(By.CSS_SELECTOR, "tr.line")
    envelope = body.find_element(By.CSS_SELECTOR, "tr.envelope")
    assert line.get_attribute("aria-expanded") == "false"
    line.send_keys(Keys.ENTER)
    assert line.get_attribute("aria-expanded") == "true"
    assert envelope.is_displayed()
    line.send_keys(Keys.SPACE)
    assert line.get_attribute("aria-expanded") == "false"
    assert not envelope.is_displayed()


CONSOLE_LOG_LIMIT = 5000  # console.js's LOG_LIMIT: the rows the page keeps


def test_a_long_pause_holds_the_newest_rows_a_resume_keeps_and_says_how_many_it_dropped(
    page: ConsolePage, access_token: str, owns: Callable[..., None], publisher: EventPublisher
) -> None:
    """Paused, the console holds at most the newest rows a resume keeps, and says how many older ones it dropped."""
    owns(USER)
    page.open_with_token(access_token)
    page.open_stream(IDENTITY)
    page.click("log-pause")
    extra = 25
    published = [
        publisher.publish(IDENTITY, "callAnswered", {"callId": f"c-{n}"}) for n in range(CONSOLE_LOG_LIMIT + extra)
    ]
    held = f"Resume ({CONSOLE_LOG_LIMIT} waiting; {extra} older dropped)"
    page.wait(60).until(lambda _: page.text("log-pause") == held)
    page.click("log-pause")
    page.wait(60).until(lambda _: page.text("log-count").endswith(f" of {CONSOLE_LOG_LIMIT})"))
    newest = page.browser.find_element(By.CSS_SELECTOR, "#log tbody.entry")  # 5000 rows: read them in the page
    assert newest.get_attribute("data-type") == "console"
    summary = newest.find_element(By.CSS_SELECTOR, "td.summary").get_attribute("textContent")
    assert summary == f"{extra} rows that arrived while paused were dropped: the timeline keeps the last 5000"
    shown = page.browser.execute_script(
        "return [...document.querySelectorAll('#log tbody[data-type=callAnswered]')].map((b) => b.dataset.eventId)"
    )
    # Newest first; the note pushed one more out, so the oldest kept is the one after the first `extra`.
    assert shown[0] == published[-1].event_id
    assert shown[-1] == published[extra + 1].event_id
    assert len(shown) == CONSOLE_LOG_LIMIT - 1
    assert page.text("log-pause") == "Pause"


CONSOLE_SAVED_LIMIT = 1000  # console.js's SAVED_LIMIT: the rows a reload keeps
CONSOLE_HEARTBEAT_LIMIT = 100  # console.js's HEARTBEAT_LIMIT: the heartbeats the page keeps besides
FAST_HEARTBEATS = 0.005  # seconds: a quiet day's heartbeats (one each 30 s) within seconds

# Counts the heartbeats the page's WebSockets receive: the page itself keeps only the newest of them.
COUNT_HEARTBEATS = """
window.heartbeatsReceived = 0;
const Real = window.WebSocket;
window.WebSocket = class extends Real {
  constructor(url, protocols) {
    super(url, protocols);
    this.addEventListener('message', (message) => {
      if (JSON.parse(message.data).type === 'heartbeat') window.heartbeatsReceived += 1;
    });
  }
};
"""


@pytest.fixture(scope="module")
def heartbeat_server(
    redis_proc: Any, provider: DevAuth, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Serve VORA sending a heartbeat every few milliseconds, for the whole module."""
    env = oauth_env(redis_proc, provider, VORA_WS_HEARTBEAT_INTERVAL=str(FAST_HEARTBEATS))
    with running_server(env, tmp_path_factory.mktemp("heartbeat-server")) as running:
        yield running


def test_heartbeats_never_push_events_out_of_the_timeline_or_out_of_a_reload(
    browser: webdriver.Chrome,
    wait: Wait,
    heartbeat_server: RunningServer,
    access_token: str,
    owns: Callable[..., None],
    publisher: EventPublisher,
) -> None:
    """A quiet day's hidden heartbeats keep to their own small bound: the day's event stays, also across a reload."""
    owns(USER)
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_HEARTBEATS})
    page = ConsolePage(browser, wait, console_url(heartbeat_server.port))
    page.open_with_token(access_token)
    page.open_stream(IDENTITY)
    published = publisher.publish(IDENTITY, "callRinging", {"callId": "c-quiet-day"})
    wait().until(lambda _: page.event_rows("callRinging"))
    heartbeats = CONSOLE_SAVED_LIMIT + CONSOLE_HEARTBEAT_LIMIT
    wait(60).until(lambda _: browser.execute_script("return window.heartbeatsReceived") >= heartbeats)
    kept = browser.execute_script("return document.querySelectorAll('#log tbody[data-kind=heartbeat]').length")
    assert kept <= CONSOLE_HEARTBEAT_LIMIT
    browser.refresh()  # what a login redirect does too: the page comes back with the rows it saved
    wait().until(lambda _: page.text("state") == "closed" and page.rows())
    assert [e["eventId"] for e in page.event_rows("callRinging")] == [published.event_id]


def test_a_resume_past_retention_shows_resume_gap_on_the_timeline(
    page: ConsolePage, access_token: str, owns: Callable[..., None], redis_proc: Any
) -> None:
    """Reopened after events it last saw were trimmed, the stream shows resumeGap as a lifecycle row, then events."""
    owns(USER)
    client = redis.Redis(host=redis_proc.host, port=redis_proc.port)
    small = make_publisher(client, max_length=10)
    page.open_with_token(access_token)
    page.open_stream(IDENTITY)
    first = small.publish(IDENTITY, "callRinging", {"callId": "c-0"})
    page.wait().until(lambda _: page.event_rows("callRinging"))
    page.click("close")
    page.wait_state("closed")
    for n in range(1, 400):
        small.publish(IDENTITY, "callRinging", {"callId": f"c-{n}"})
    page.click("open")  # "resume after the last eventId" is ticked: the SDK asks for what followed c-0
    gap = page.wait_row("resumeGap")
    assert gap.kind == "lifecycle"
    assert gap.detail["data"]["requestedEventId"] == first.event_id
    assert gap.detail["data"]["reason"] == "retention"
    assert f"requestedEventId={first.event_id}" in gap.summary


def test_session_panel_shows_identity_transport_options_and_the_token(
    page: ConsolePage, access_token: str, owns: Callable[..., None]
) -> None:
    """The session panel names the identity, SSE as transport and connectionType, holdUpMode, push and the token."""
    owns(USER)
    page.open_with_token(access_token)
    page.wait().until(lambda _: page.text("identity") == IDENTITY)
    Select(page.browser.find_element(By.ID, "transport")).select_by_value("sse")
    page.click("hold-up")
    Select(page.browser.find_element(By.ID, "push-platform")).select_by_value("webpush")
    page.browser.find_element(By.ID, "push-token").send_keys("https://push.example/device-1")
    page.open_stream(IDENTITY)
    assert page.text("fact-identity") == IDENTITY
    assert page.text("fact-transport") == "sse"
    assert page.text("fact-connection-type") == "ServerSentEvents"
    assert page.text("fact-hold-up") == "true"
    assert page.text("fact-push").startswith("webpush")
    assert page.text("token-sub") == USER
    assert "scope.vora.identities" in page.text("token-scopes").split()
    assert "min" in page.text("token-exp")
    assert "not verified" in page.text("session-panel")
    assert page.rows_of("setup")[0].detail["connectionType"] == "ServerSentEvents"


REFUSED_SOCKETS = """
const Real = window.WebSocket;
window.WebSocket = class extends Real {
  constructor(url, protocols) { super(String(url).replace('/vora/ws', '/vora/ws-refused'), protocols); }
};
"""


def test_auto_falls_back_to_sse_when_the_websocket_cannot_pass(
    page: ConsolePage, access_token: str, owns: Callable[..., None], publisher: EventPublisher
) -> None:
    """With WebSocket blocked, the SDK's auto choice falls back to SSE, and the timeline and panel show it."""
    owns(USER)
    # Chromium cannot block a WebSocket by URL: the page's sockets go to a path VORA refuses, as when a proxy
    # on the way loses the upgrade (a browser sees 1006 either way); fetch, and so SSE, pass untouched.
    page.browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": REFUSED_SOCKETS})
    page.open_with_token(access_token)
    page.wait().until(lambda _: page.text("identity") == IDENTITY)
    page.click("open")
    fallback = page.wait_row("fallback", "websocket → sse", timeout=40)
    assert fallback.detail["failures"] >= 1
    page.wait_state("open", timeout=40)
    assert page.text("fact-transport") == "sse"
    published = publisher.publish(IDENTITY, "callRinging", {"callId": "c-sse"})
    page.wait().until(lambda _: page.event_rows("callRinging"))
    assert page.event_rows("callRinging")[0]["eventId"] == published.event_id


def test_console_fits_a_narrow_window(page: ConsolePage, access_token: str, owns: Callable[..., None]) -> None:
    """At 400 px wide nothing scrolls sideways and the controls and timeline stay in view."""
    owns(USER)
    page.browser.set_window_size(400, 900)
    page.open_with_token(access_token)
    page.open_stream(IDENTITY)
    width = page.browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width
    for element_id in ("open", "log-pause", "log-export", "log"):
        box = page.browser.find_element(By.ID, element_id).rect
        assert box["x"] >= 0, (element_id, box)
        assert box["x"] + box["width"] <= width[1], (element_id, box)


def test_simulator_panel_is_hidden_when_the_endpoint_is_off(
    page: ConsolePage, access_token: str, owns: Callable[..., None], console_server: RunningServer
) -> None:
    """Without the development simulator (a 404), the simulator panel and the stored-session view stay hidden."""
    owns(USER)
    answer = requests.get(
        f"{console_server.base_url}/console/simulator",
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=5,
    )
    assert answer.status_code == 404
    page.open_with_token(access_token)
    page.wait().until(lambda _: page.browser.find_element(By.ID, "simulator-panel").get_attribute("data-simulator"))
    assert page.browser.find_element(By.ID, "simulator-panel").get_attribute("data-simulator") == "off"
    assert not page.browser.find_element(By.ID, "simulator-panel").is_displayed()
    assert not page.browser.find_element(By.ID, "server-view").is_displayed()


def test_simulator_panel_publishes_a_template_and_shows_the_stored_session(
    browser: webdriver.Chrome,
    wait: Wait,
    access_token: str,
    owns: Callable[..., None],
    simulator_server: RunningServer,
) -> None:
    """With the simulator on, an edited template is published to the identity, arrives, and its session is shown."""
    owns(USER)
    page = ConsolePage(browser, wait, console_url(simulator_server.port))
    page.open_with_token(access_token)
    wait().until(ec.visibility_of_element_located((By.ID, "simulator-panel")))
    assert {"callRinging", "callAnswered", "presence", "recordingStarted"} <= {
        str(option.get_attribute("value")) for option in Select(browser.find_element(By.ID, "sim-type")).options
    }
    page.open_stream(IDENTITY)
    wait().until(lambda _: "subscription: subscribeAll" in page.text("server-sessions"))
    assert "online" in page.text("server-online")
    assert "WebSocket" in page.text("server-sessions")

    Select(browser.find_element(By.ID, "sim-type")).select_by_value("callRinging")
    data = json.loads(str(browser.find_element(By.ID, "sim-data").get_attribute("value")))
    assert isinstance(data, dict)
    data["callId"] = "c-simulated"
    browser.find_element(By.ID, "sim-data").clear()
    browser.find_element(By.ID, "sim-data").send_keys(json.dumps(data))
    page.click("sim-publish")
    wait().until(ec.text_to_be_present_in_element((By.ID, "sim-result"), "Published callRinging"))
    wait().until(lambda _: page.event_rows("callRinging"))
    (shown,) = page.event_rows("callRinging")
    assert shown["eventId"] in page.text("sim-result")
    assert shown["data"] == data

    browser.find_element(By.ID, "sim-data").send_keys("not json")
    page.click("sim-publish")
    wait().until(ec.text_to_be_present_in_element((By.ID, "sim-result"), "not JSON"))
    assert len(page.event_rows("callRinging")) == 1
    assert no_policy_violations(browser) == []


def test_console_says_when_the_sdk_bundle_is_missing(
    browser: webdriver.Chrome, wait: Wait, redis_proc: Any, provider: DevAuth, tmp_path: Path
) -> None:
    """Served without its SDK bundle (VORA_CONSOLE_SDK empty), the page says so and names `make sdk`."""
    env = oauth_env(redis_proc, provider, VORA_CONSOLE_SDK="")
    with running_server(env, tmp_path) as server:
        browser.get(console_url(server.port))
        wait().until(ec.text_to_be_present_in_element((By.ID, "status"), "make sdk"))
    assert "SDK bundle did not load" in browser.find_element(By.ID, "status").text


@pytest.fixture(scope="module")
def providerless_server(
    redis_proc: Any, key_dir: Path, dev_key_pem: bytes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    """Serve VORA trusting the development key, its issuer a provider that is down; yield it and the issuer."""
    issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        "VORA_REDIS_URL": f"redis://{redis_proc.host}:{redis_proc.port}/0",
        "VORA_DEV_KEY": str(key_dir / "dev-key.pem"),
        "VORA_OAUTH_ISSUER": issuer,
        "VORA_OAUTH_AUDIENCE": AUDIENCE,
        "VORA_SERVER_API_KEYS": SERVER_KEY,
    }
    with running_server(env, tmp_path_factory.mktemp("providerless-server")) as running:
        yield running, issuer


def test_console_says_when_the_authorization_server_does_not_answer_and_takes_a_pasted_token(
    browser: webdriver.Chrome,
    wait: Wait,
    providerless_server: tuple[RunningServer, str],
    dev_key_pem: bytes,
    owns: Callable[..., None],
) -> None:
    """With the provider down, the page says Log in is unavailable and why, and a pasted token still works."""
    owns(USER)
    server, issuer = providerless_server
    page = ConsolePage(browser, wait, console_url(server.port))
    browser.get(page.url)
    wait().until(ec.text_to_be_present_in_element((By.ID, "status"), "Log in is unavailable"))
    said = page.text("status")
    assert f"the authorization server {issuer} did not answer" in said
    assert "paste an access token" in said
    assert browser.find_element(By.ID, "status").get_attribute("class") == "error"
    assert not browser.find_element(By.ID, "login").is_displayed()
    page.open_with_token(mint_token(dev_key_pem, USER, issuer, AUDIENCE))
    page.open_stream(IDENTITY)


def test_an_expired_access_token_is_shown_expired_and_said_once_while_the_stream_carries_on(
    browser: webdriver.Chrome,
    wait: Wait,
    providerless_server: tuple[RunningServer, str],
    dev_key_pem: bytes,
    owns: Callable[..., None],
) -> None:
    """An expired pasted token shows expired, the status says to paste a fresh one, which the box then takes."""
    owns(USER)
    server, issuer = providerless_server
    page = ConsolePage(browser, wait, console_url(server.port))
    page.open_with_token(mint_token(dev_key_pem, USER, issuer, AUDIENCE, lifetime=6))
    page.open_stream(IDENTITY)
    assert " min " in page.text("token-exp")
    wait(15).until(lambda _: page.text("token-exp").endswith("(expired)"))
    assert browser.find_element(By.ID, "token-exp").get_attribute("class") == "error"
    assert page.text("token-sub") == USER
    said = page.text("status")
    assert said.startswith("The access token expired at ")
    assert "log in again (or paste a fresh token)" in said
    assert page.text("state") == "open"  # the session outlives the access token
    # A new setup needs a token only a new login brings: the console's provider says so, and the stream stops.
    end_sessions(server.server_api_url, SERVER_KEY, IDENTITY, "disconnected")
    page.wait_state("closed")
    assert page.wait_row("closed").summary.startswith("stream closed: unauthorized")
    assert "Log in again" in page.text("status")
    # The paste box the status line names is open beside Log out: a fresh token, and the stream opens again.
    browser.find_element(By.ID, "paste-token").send_keys(mint_token(dev_key_pem, USER, issuer, AUDIENCE))
    page.click("use-token")
    wait().until(lambda _: " min " in page.text("token-exp"))
    page.click("open")
    page.wait_state("open")


# Seconds: the provider's access tokens outlive a login, a setup and a publish on a loaded machine, not a test.
SHORT_TOKEN_TTL = 15


@pytest.fixture(scope="module")
def short_token_server(
    redis_proc: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DevAuth, RunningServer]]:
    """Serve VORA trusting a provider of its own whose access tokens expire within seconds; yield both."""
    port = free_port()
    with (
        new_provider(port, access_token_ttl=SHORT_TOKEN_TTL) as short_provider,
        running_server(
            oauth_env(redis_proc, short_provider, VORA_SERVER_API_KEYS=SERVER_KEY),
            tmp_path_factory.mktemp("short-token-server"),
            port=port,
        ) as running,
    ):
        yield short_provider, running


def test_an_expired_token_offers_log_in_and_the_stream_resumes_after_it(
    browser: webdriver.Chrome,
    wait: Wait,
    short_token_server: tuple[DevAuth, RunningServer],
    owns: Callable[..., None],
    publisher: EventPublisher,
) -> None:
    """Once the token expires Log in is offered beside Log out, and after it the stream resumes after its last event."""
    owns(USER)
    short_provider, server = short_token_server
    page = ConsolePage(browser, wait, console_url(server.port))
    browser.get(page.url)
    wait().until(ec.text_to_be_present_in_element((By.ID, "login-help"), short_provider.issuer))
    page.click("login")
    sign_in_on_provider_page(browser, wait, short_provider)
    page.open_stream(IDENTITY)
    seen = publisher.publish(IDENTITY, "callRinging", {"callId": "c-before"})
    wait().until(lambda _: page.event_rows("callRinging"))
    wait(SHORT_TOKEN_TTL + 10).until(lambda _: page.text("token-exp").endswith("(expired)"))
    assert "log in again" in page.text("status")
    # What the status line asks for is on screen: Log in, and the paste box.
    assert browser.find_element(By.ID, "paste").is_displayed()
    expired = page.text("token-exp")
    page.click("login")  # the provider still knows the user: it answers with a new code at once
    # The new token's expiry, not "Logged in.", which the identities' answer replaces within moments.
    wait().until(lambda _: page.text("token-exp") not in ("", expired))
    assert not page.text("token-exp").endswith("(expired)")
    missed = publisher.publish(IDENTITY, "callRinging", {"callId": "c-while-away"})
    page.click("open")  # "resume after the last eventId" is ticked: the stream before the login counts
    page.wait_row("connection", f"open after {seen.event_id}")
    wait().until(lambda _: len(page.event_rows("callRinging")) == 2)
    assert [e["eventId"] for e in page.event_rows("callRinging")] == [seen.event_id, missed.event_id]


# Frames a URL in the current page and reports once the frame has finished (a refused frame loads an error page).
FRAME_URL = """
const [url, done] = arguments;
const frame = document.createElement('iframe');
frame.onload = () => done('loaded');
frame.src = url;
document.body.appendChild(frame);
"""


def test_console_sends_its_security_headers_and_refuses_to_be_framed(
    browser: webdriver.Chrome, provider: DevAuth, console_server: RunningServer
) -> None:
    """The real server sends CSP, X-Frame-Options and nosniff on the console, and Chromium refuses to frame it."""
    page = requests.get(console_url(console_server.port), timeout=5)
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    assert f"connect-src 'self' {provider.issuer.rstrip('/')}" in policy
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for asset in ("console.js", "config.json", "sdk/vora-client.js"):
        assert requests.get(console_url(console_server.port) + asset, timeout=5).headers["X-Content-Type-Options"]
    browser.set_script_timeout(20)
    browser.get(f"{provider.issuer}/.well-known/openid-configuration")  # a page of another origin
    assert browser.execute_async_script(FRAME_URL, console_url(console_server.port)) == "loaded"
    refusals = [entry["message"] for entry in browser.get_log("browser") if "frame" in entry["message"]]
    assert any("frame-ancestors" in message or "X-Frame-Options" in message for message in refusals), refusals
