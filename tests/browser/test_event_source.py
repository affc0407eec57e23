"""A real browser's EventSource on /vora/sse: it gets events, is dropped, reconnects by itself and misses nothing."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import requests
from selenium import webdriver

from testbed.ports import free_port
from testbed.vora_server import RunningServer, running_server
from tests.harness.browser import Wait
from tests.harness.server_env import server_env
from tests.harness.tokens import TokenFactory
from tests.harness.ws_client import make_publisher, open_event_stream
from vora.store import keys

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.ws]

IDENTITY = "910111000"
UNKNOWN_TOKEN = "v1.bm9wZQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # well formed, never issued

OPEN_EVENT_SOURCE = """
const url = arguments[0];
window.seen = []; window.opens = 0; window.errors = 0;
window.stream = new EventSource(url);
window.stream.onopen = () => { window.opens += 1; };
window.stream.onerror = () => { window.errors += 1; };
window.stream.onmessage = (message) => {
  const envelope = JSON.parse(message.data);
  window.seen.push({type: envelope.type, eventId: envelope.eventId, lastEventId: message.lastEventId});
};
"""


@pytest.fixture
def sse_server(
    redis_proc: Any, key_dir: Path, dev_key_pem: bytes, jwks_path: Path, tmp_path: Path
) -> Iterator[RunningServer]:
    """Serve VORA with a short EventSource retry window, so the browser comes back within a second."""
    env = server_env(
        redis_proc,
        key_dir,
        jwks_path,
        VORA_SSE_RETRY_WINDOW="1",
    )
    with running_server(env, tmp_path) as server:
        yield server


def stream_events(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    """Return the stream events the page's EventSource received (heartbeats left out)."""
    seen: list[dict[str, Any]] = browser.execute_script("return window.seen;")
    return [event for event in seen if event["eventId"] is not None]


def test_event_source_reconnects_with_last_event_id_and_misses_nothing(
    browser: webdriver.Chrome, wait: Wait, sse_server: RunningServer, redisdb: redis.Redis, make_token: TokenFactory
) -> None:
    """Events reach the page; a SIGKILLed worker drops the stream; EventSource resumes by Last-Event-ID, whole."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    setup = requests.post(
        f"{sse_server.base_url}/identity/setup",
        json={"connectionType": "ServerSentEvents", "identity": IDENTITY},
        headers={"Authorization": f"Bearer {make_token('alice')}"},
        timeout=10,
    )
    assert setup.status_code == 200, setup.text
    token = setup.json()["webSocketToken"]
    publisher = make_publisher(redisdb)

    browser.get(f"{sse_server.base_url}/console/")  # a page of VORA's own origin
    browser.execute_script(OPEN_EVENT_SOURCE, f"/vora/sse?token={token}")
    wait().until(lambda b: b.execute_script("return window.opens;") == 1)
    before = [publisher.publish(IDENTITY, "callRinging", {"callId": f"a-{n}"}).event_id for n in range(3)]
    wait().until(lambda b: len(stream_events(b)) == 3)

    for pid in sse_server.worker_pids():
        os.kill(pid, signal.SIGKILL)
    during = [publisher.publish(IDENTITY, "callRinging", {"callId": f"b-{n}"}).event_id for n in range(3)]
    wait(30).until(lambda b: b.execute_script("return window.opens;") == 2)
    after = [publisher.publish(IDENTITY, "callEnded", {"callId": "b-2"}).event_id]
    wait().until(lambda b: len(stream_events(b)) == 7)

    events = stream_events(browser)
    assert [event["eventId"] for event in events] == before + during + after
    assert [event["lastEventId"] for event in events] == before + during + after
    assert browser.execute_script("return window.errors;") >= 1
    browser.execute_script("window.stream.close();")


def test_event_source_dropped_before_any_event_resumes_from_channel_opened(
    browser: webdriver.Chrome, wait: Wait, sse_server: RunningServer, redisdb: redis.Redis, make_token: TokenFactory
) -> None:
    """An EventSource that got only channelOpened comes back with its id as Last-Event-ID and misses nothing."""
    redisdb.sadd(keys.user_identities("alice"), IDENTITY)
    setup = requests.post(
        f"{sse_server.base_url}/identity/setup",
        json={"connectionType": "ServerSentEvents", "identity": IDENTITY},
        headers={"Authorization": f"Bearer {make_token('alice')}"},
        timeout=10,
    )
    assert setup.status_code == 200, setup.text
    token = setup.json()["webSocketToken"]
    publisher = make_publisher(redisdb)
    seen = publisher.publish(IDENTITY, "presence", {"status": "away"}).event_id
    open_event_stream(sse_server.base_url, token).close()  # the session's first stream: the page's starts live

    browser.get(f"{sse_server.base_url}/console/")
    browser.execute_script(OPEN_EVENT_SOURCE, f"/vora/sse?token={token}")
    wait().until(lambda b: b.execute_script("return window.seen.length;") == 1)
    assert browser.execute_script("return window.seen;") == [
        {"type": "channelOpened", "eventId": None, "lastEventId": seen}
    ]
    master = sse_server.process.pid
    assert master is not None
    os.kill(master, signal.SIGSTOP)  # no worker comes back until the events below are published
    try:
        for pid in sse_server.worker_pids():
            os.kill(pid, signal.SIGKILL)
        during = [publisher.publish(IDENTITY, "callRinging", {"callId": f"b-{n}"}).event_id for n in range(3)]
    finally:
        os.kill(master, signal.SIGCONT)
    wait(30).until(lambda b: len(stream_events(b)) == 3)
    assert [event["eventId"] for event in stream_events(browser)] == during
    assert "resumeGap" not in {event["type"] for event in browser.execute_script("return window.seen;")}
    browser.execute_script("window.stream.close();")


READ_REFUSAL = """
const [url, done] = arguments;
fetch(url, {headers: {Accept: "text/event-stream"}})
  .then((response) => response.json().then((body) => done({
    status: response.status, retryAfter: response.headers.get("Retry-After"), message: body.message,
  })))
  .catch((error) => done({error: String(error)}));
"""


def test_a_page_of_a_listed_origin_reads_the_streams_retry_after(
    browser: webdriver.Chrome, key_dir: Path, dev_key_pem: bytes, jwks_path: Path, tmp_path: Path
) -> None:
    """A page of a VORA_CORS_ORIGINS origin refused 503 by /vora/sse (the bus unreachable) reads its Retry-After."""
    port = free_port()
    unreachable = SimpleNamespace(host="127.0.0.1", port=free_port())  # no Redis listens there
    env = server_env(
        unreachable,
        key_dir,
        jwks_path,
        VORA_CORS_ORIGINS=f"http://localhost:{port}",
        VORA_WS_ACCEPT_TIMEOUT="0.5",
        VORA_REDIS_TIMEOUT="0.2",
    )
    with running_server(env, tmp_path, port=port) as server:
        # A page of the listed origin with no Content-Security-Policy of its own (a 404 in the error shape).
        browser.get(f"http://localhost:{port}/vora/no-such-page")
        browser.set_script_timeout(20)
        answer = browser.execute_async_script(READ_REFUSAL, f"{server.base_url}/sse?token={UNKNOWN_TOKEN}")
    assert answer == {
        "status": 503,
        "retryAfter": "1",
        "message": "The event bus is unavailable on this instance; retry",
    }
