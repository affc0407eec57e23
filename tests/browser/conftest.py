"""Fixtures for browser tests: headless Chromium through chromedriver, with evidence kept when a test fails."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from tests.harness.browser import Wait

CHROMIUM = ("chromium", "chromium-browser")
# Chromium reaches out to Google's services unless told not to; only loopback is open here.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--window-size=1280,1000",
)
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "browser-artifacts"


def _binaries() -> tuple[str, str]:
    browser = next((path for name in CHROMIUM if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("Chromium or chromedriver is missing: `make test-tools` installs chromium and chromium-driver")
    return browser, driver


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep a failed browser test's screenshot, page and console log, and name them in its failure report."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    driver = getattr(item, "funcargs", {}).get("browser")
    if report.when == "call" and report.failed and isinstance(driver, webdriver.Chrome):
        try:
            folder = _save_evidence(driver, item.name)
        except WebDriverException as exc:
            where = f"none: the browser could not be asked ({exc.msg})"
        else:
            where = f"{folder} (screenshot-*.png, page-*.html, console.log)"
        addsection = getattr(report.longrepr, "addsection", None)
        if callable(addsection):
            addsection("browser evidence", where)  # inside the failure's own text
        else:
            report.sections.append(("browser evidence", where))
    return report


def _save_evidence(driver: webdriver.Chrome, name: str) -> Path:
    folder = ARTIFACTS / name
    folder.mkdir(parents=True, exist_ok=True)
    for handle in driver.window_handles:
        driver.switch_to.window(handle)
        driver.save_screenshot(str(folder / f"screenshot-{handle[-8:]}.png"))
        (folder / f"page-{handle[-8:]}.html").write_text(driver.page_source)
    (folder / "console.log").write_text("\n".join(json.dumps(entry) for entry in driver.get_log("browser")))
    return folder


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Start headless Chromium with a new profile; on failure keep a screenshot, the page and the console log."""
    binary, driver_path = _binaries()
    profile = tempfile.mkdtemp(prefix="vora-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never runs, so nothing is downloaded.
    service = Service(executable_path=driver_path, log_output=str(Path(profile) / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.fail(f"Chromium is installed but did not start: {exc.msg}")
    try:
        yield driver
    finally:
        # A failed test's evidence was kept while the test's report was made (pytest_runtest_makereport).
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def wait(browser: webdriver.Chrome) -> Wait:
    """Return a WebDriverWait on the browser with a generous default deadline."""

    def waiter(timeout: float = 20.0) -> WebDriverWait[webdriver.Chrome]:
        return WebDriverWait(browser, timeout, poll_frequency=0.1)

    return waiter
