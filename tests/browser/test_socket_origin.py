"""From a real browser, /vora/ws opens for VORA's own pages and refuses pages of another origin."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from selenium import webdriver

from testbed.vora_server import RunningServer
from tests.harness.browser import Wait
from tests.harness.devauth import DevAuth
from tests.harness.oauth import IDENTITY, PASSWORD, USER, WEB_CLIENT, console_url
from tests.harness.oauth_flow import authorization_code_login

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.oauth]

# Opens the socket from the current page and records how it went (a browser never shows the HTTP status).
OPEN_SOCKET = """
const [url, done] = arguments;
const ws = new WebSocket(url);
ws.onopen = () => { done('open'); ws.close(); };
ws.onclose = (event) => done(`closed ${event.code}`);
"""


def test_page_origin_decides_whether_the_socket_opens(
    browser: webdriver.Chrome,
    wait: Wait,
    provider: DevAuth,
    oauth_server: RunningServer,
    owns: Callable[..., None],
) -> None:
    """With a valid token, the socket opens from VORA's console page and is refused (403) from another origin."""
    owns(USER)
    tokens = authorization_code_login(provider.discovery(), WEB_CLIENT, console_url(oauth_server.port), USER, PASSWORD)
    setup = requests.post(
        f"{oauth_server.base_url}/identity/setup",
        json={"connectionType": "WebSocket", "identity": IDENTITY},
        headers={"Authorization": f"Bearer {tokens.access_token}"},
        timeout=5,
    )
    socket_url = f"{oauth_server.ws_url}?token={setup.json()['webSocketToken']}"
    browser.set_script_timeout(20)

    browser.get(f"{provider.issuer}/.well-known/openid-configuration")  # a page of another origin
    assert browser.execute_async_script(OPEN_SOCKET, socket_url) == "closed 1006"
    browser.get(console_url(oauth_server.port))
    assert browser.execute_async_script(OPEN_SOCKET, socket_url) == "open"
    assert '"path": "/vora/ws", "status": 403' in oauth_server.log()
