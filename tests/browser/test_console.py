"""The web console in headless Chromium against the real provider and the real VORA server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from tests.browser.conftest import Wait
from tests.harness.devauth import DevAuth
from tests.harness.vora_server import RunningServer
from tests.oauth.conftest import IDENTITY, PASSWORD, USER, console_url
from tests.ws.client import make_publisher

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.oauth]


def text_of(browser: webdriver.Chrome, element_id: str) -> str:
    """Return the visible text of the element with this id."""
    text: str = browser.find_element(By.ID, element_id).text
    return text


def sign_in_on_provider_page(browser: webdriver.Chrome, wait: Wait, provider: DevAuth) -> None:
    """Fill in and submit the provider's own login form."""
    wait().until(ec.visibility_of_element_located((By.ID, "username")))
    assert browser.current_url.startswith(provider.issuer)
    browser.find_element(By.ID, "username").send_keys(USER)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()


def envelopes(browser: webdriver.Chrome, event_type: str) -> list[dict[str, Any]]:
    """Return the envelopes of this type the console shows, in order."""
    items = browser.find_elements(By.CSS_SELECTOR, f'#events li[data-type="{event_type}"] pre')
    return [json.loads(item.text) for item in items]


def test_console_logs_in_subscribes_receives_resumes_and_logs_out(
    browser: webdriver.Chrome,
    wait: Wait,
    provider: DevAuth,
    oauth_server: RunningServer,
    owns: Callable[..., None],
    redis_proc: Any,
) -> None:
    """A user logs in on the provider's page, sets up, subscribes, sees events live, resumes after a drop, logs out."""
    owns(USER)
    publisher = make_publisher(redis.Redis(host=redis_proc.host, port=redis_proc.port))
    browser.get(console_url(oauth_server.port))
    wait().until(ec.element_to_be_clickable((By.ID, "login"))).click()
    sign_in_on_provider_page(browser, wait, provider)

    wait().until(ec.text_to_be_present_in_element((By.ID, "who"), f"signed in as {USER}"))
    wait().until(ec.element_to_be_clickable((By.ID, "load-identities"))).click()
    wait().until(ec.element_to_be_clickable((By.ID, "setup")))
    assert text_of(browser, "identity") == IDENTITY
    browser.find_element(By.ID, "setup").click()
    wait().until(ec.text_to_be_present_in_element((By.ID, "status"), f"Session set up on {IDENTITY}"))
    wait().until(ec.element_to_be_clickable((By.CSS_SELECTOR, 'input[value="callRinging"]'))).click()
    browser.find_element(By.ID, "subscribe").click()
    wait().until(ec.text_to_be_present_in_element((By.ID, "status"), "Subscribed to callRinging."))

    browser.find_element(By.ID, "connect").click()
    wait().until(ec.text_to_be_present_in_element((By.ID, "socket-state"), "open"))
    publisher.publish(IDENTITY, "presence", {"status": "busy"})  # not subscribed: never shown
    first = publisher.publish(IDENTITY, "callRinging", {"callId": "c-1", "from": "+34602128708"})
    wait().until(lambda _: envelopes(browser, "callRinging"))
    (shown,) = envelopes(browser, "callRinging")
    assert shown["eventId"] == first.event_id
    assert shown["sequenceNumber"] == first.sequence_number
    assert shown["identity"] == IDENTITY
    assert shown["data"] == {"callId": "c-1", "from": "+34602128708"}

    browser.find_element(By.ID, "drop").click()
    wait().until(ec.text_to_be_present_in_element((By.ID, "socket-state"), "dropped"))
    second = publisher.publish(IDENTITY, "callRinging", {"callId": "c-2", "from": "+34602128708"})
    wait().until(ec.text_to_be_present_in_element((By.ID, "socket-state"), f"open (resumed after {first.event_id})"))
    wait().until(lambda _: len(envelopes(browser, "callRinging")) == 2)
    assert [e["eventId"] for e in envelopes(browser, "callRinging")] == [first.event_id, second.event_id]
    assert envelopes(browser, "presence") == []

    browser.find_element(By.ID, "logout").click()
    wait().until(ec.text_to_be_present_in_element((By.ID, "status"), "Logged out (the socket ended: logout)."))
    assert browser.current_url == console_url(oauth_server.port)
    # The provider's session ended too: logging in again asks for the password.
    wait().until(ec.element_to_be_clickable((By.ID, "login"))).click()
    wait().until(ec.visibility_of_element_located((By.ID, "password")))
    # Everything above ran under the console's Content-Security-Policy without tripping it.
    assert [entry for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]] == []


# Frames a URL in the current page and reports once the frame has finished (a refused frame loads an error page).
FRAME_URL = """
const [url, done] = arguments;
const frame = document.createElement('iframe');
frame.onload = () => done('loaded');
frame.src = url;
document.body.appendChild(frame);
"""


def test_console_sends_its_security_headers_and_refuses_to_be_framed(
    browser: webdriver.Chrome, provider: DevAuth, oauth_server: RunningServer
) -> None:
    """The real server sends CSP, X-Frame-Options and nosniff on the console, and Chromium refuses to frame it."""
    page = requests.get(console_url(oauth_server.port), timeout=5)
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    assert f"connect-src 'self' {provider.issuer.rstrip('/')}" in policy
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for asset in ("console.js", "config.json"):
        assert requests.get(console_url(oauth_server.port) + asset, timeout=5).headers["X-Content-Type-Options"]
    browser.set_script_timeout(20)
    browser.get(f"{provider.issuer}/.well-known/openid-configuration")  # a page of another origin
    assert browser.execute_async_script(FRAME_URL, console_url(oauth_server.port)) == "loaded"
    refusals = [entry["message"] for entry in browser.get_log("browser") if "frame" in entry["message"]]
    assert any("frame-ancestors" in message or "X-Frame-Options" in message for message in refusals), refusals
