"""What the browser tests share: the wait type and signing in on the provider's page."""

from __future__ import annotations

from collections.abc import Callable

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from tests.harness.devauth import DevAuth
from tests.harness.oauth import PASSWORD, USER

Wait = Callable[..., WebDriverWait[webdriver.Chrome]]


def sign_in_on_provider_page(browser: webdriver.Chrome, wait: Wait, provider: DevAuth) -> None:
    """Fill in and submit the provider's own login form."""
    wait().until(ec.visibility_of_element_located((By.ID, "username")))
    assert browser.current_url.startswith(provider.issuer)
    browser.find_element(By.ID, "username").send_keys(USER)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()


def set_offline(browser: webdriver.Chrome, offline: bool) -> None:
    """Take the tab off the network or put it back, as a laptop losing its Wi-Fi (DevTools' network emulation)."""
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
