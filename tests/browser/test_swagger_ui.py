"""Swagger UI's Authorize button in headless Chromium: authorization code + PKCE against the real provider."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from testbed.vora_server import RunningServer
from tests.harness.browser import Wait, sign_in_on_provider_page
from tests.harness.devauth import DevAuth
from tests.harness.oauth import IDENTITY, USER

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.oauth]


def test_swagger_ui_authorize_logs_in_and_try_it_out_works(
    browser: webdriver.Chrome,
    wait: Wait,
    provider: DevAuth,
    oauth_server: RunningServer,
    owns: Callable[..., None],
) -> None:
    """Authorize opens the provider's login, PKCE yields a token, and GET /identity answers 200 from the page."""
    owns(USER)
    browser.get(f"{oauth_server.base_url}/ui/")
    wait().until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button.btn.authorize"))).click()
    modal = wait().until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".auth-container")))
    assert modal.find_element(By.CSS_SELECTOR, "input#client_id").get_attribute("value") == "vora-web"
    main_window = browser.current_window_handle
    modal.find_element(By.CSS_SELECTOR, "button.btn.modal-btn.auth.authorize").click()

    wait().until(lambda b: len(b.window_handles) == 2)
    browser.switch_to.window(next(h for h in browser.window_handles if h != main_window))
    sign_in_on_provider_page(browser, wait, provider)
    wait().until(lambda b: len(b.window_handles) == 1)  # oauth2-redirect.html hands the code back and closes
    browser.switch_to.window(main_window)

    wait().until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".auth-container"), "Logout"))
    browser.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper .btn-done").click()
    operation = browser.find_element(By.ID, "operations-Session-identities")
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait().until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-Session-identities .try-out__btn"))).click()
    wait().until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-Session-identities .execute"))).click()
    responses = "#operations-Session-identities .live-responses-table"
    status = (By.CSS_SELECTOR, f"{responses} tr.response .response-col_status")
    wait().until(ec.text_to_be_present_in_element(status, "200"))
    body = browser.find_element(By.CSS_SELECTOR, f"{responses} .microlight")
    assert IDENTITY in body.text
