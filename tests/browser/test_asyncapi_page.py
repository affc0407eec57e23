"""The AsyncAPI page in headless Chromium: the event contract rendered from VORA's own files, offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from tests.browser.conftest import Wait
from tests.harness.vora_server import RunningServer, running_server
from vora.catalog import LIFECYCLE_EVENTS, SUBSCRIBABLE_EVENTS

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path, redisdb: redis.Redis) -> Iterator[RunningServer]:
    """Serve VORA with one gevent worker on a loopback port."""
    with running_server(env, tmp_path) as running:
        yield running


def test_the_event_contract_renders(browser: webdriver.Chrome, wait: Wait, server: RunningServer) -> None:
    """/vora/asyncapi/ renders the document's title, its channel and every message, with no error in the console."""
    browser.get(f"{server.base_url}/asyncapi/")
    root = (By.CSS_SELECTOR, "#asyncapi")
    wait().until(ec.text_to_be_present_in_element(root, "VORA Events"))
    wait().until(ec.text_to_be_present_in_element(root, "/vora/ws"))
    text = browser.find_element(*root).text
    assert "receiveEvents" in text or "Receive the identity's events" in text
    for message in (*SUBSCRIBABLE_EVENTS, *LIFECYCLE_EVENTS):
        assert message in text, message
    assert browser.find_element(By.ID, "vora-problem").get_attribute("hidden") is not None
    severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    links = {a.text: a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#vora-links a")}
    assert links["REST API (Swagger UI)"] == f"{server.base_url}/ui/"
