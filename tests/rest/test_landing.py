"""Tests of the landing page at /vora/ on a real server: what it links, and that every link answers."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest
import requests

from testbed.vora_server import RunningServer, running_server

pytestmark = pytest.mark.slow

SERVER_KEY = "landing-server-key-0123456789abcdefghijklmnopq"


class Links(HTMLParser):
    """Collect every href, and whether the page loads anything (scripts, images, stylesheets, frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.loads: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note a link's target, or anything that would fetch a resource."""
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(str(values["href"]))
        if tag in {"script", "img", "link", "iframe", "object", "embed"} or "src" in values:
            self.loads.append(tag)


def _links(page: str) -> Links:
    parser = Links()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def full_server(ws_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Serve VORA with its server API and the simulator, as `make run` does."""
    env = {**ws_env, "VORA_SERVER_API_KEYS": SERVER_KEY, "VORA_CONSOLE_SIMULATOR": "1"}
    with running_server(env, tmp_path_factory.mktemp("landing")) as running:
        yield running


@pytest.fixture(scope="module")
def bare_server(ws_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Serve VORA with neither the server API nor the simulator, as production does by default."""
    with running_server(ws_env, tmp_path_factory.mktemp("landing-bare")) as running:
        yield running


def test_every_link_answers_200(full_server: RunningServer, redisdb: object) -> None:
    """The page links the console, both Swagger UIs and the event contract, and each link answers 200."""
    page_url = f"http://127.0.0.1:{full_server.port}/vora/"
    response = requests.get(page_url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    links = _links(response.text)
    targets = [urljoin(page_url, href) for href in links.hrefs]
    base = f"http://127.0.0.1:{full_server.port}/vora"
    server_base = f"http://127.0.0.1:{full_server.server_api_port}/vora/server/v1"
    expected = {
        f"{base}/console/",
        f"{base}/ui/",
        f"{base}/asyncapi/",
        f"{server_base}/ui/",
    }
    assert expected <= set(targets), targets
    for target in targets:
        assert requests.get(target, timeout=10).status_code == 200, target


def test_the_page_loads_nothing_and_fits_a_narrow_window(full_server: RunningServer) -> None:
    """No script or outside resource, a CSP that allows nothing but its own inline style, and a viewport meta tag."""
    response = requests.get(f"http://127.0.0.1:{full_server.port}/vora/", timeout=10)
    assert _links(response.text).loads == []
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src" not in policy
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in response.text
    assert "/vora/console/simulator" in response.text
    assert "/vora/health/liveness" in response.text
    assert "/vora/health/readiness" in response.text


def test_without_the_server_api_the_page_says_so(bare_server: RunningServer) -> None:
    """With no server API key the page links no server API, says how to turn it on, and the simulator is off."""
    response = requests.get(f"http://127.0.0.1:{bare_server.port}/vora/", timeout=10)
    assert response.status_code == 200
    assert not any("/vora/server/" in href for href in _links(response.text).hrefs)
    assert "VORA_SERVER_API_KEYS" in response.text
    assert "VORA_CONSOLE_SIMULATOR=1" in response.text


def test_the_api_base_without_a_slash_redirects_to_the_page(bare_server: RunningServer) -> None:
    """GET /vora redirects to /vora/, and the API's own routes under /vora are untouched."""
    response = requests.get(f"http://127.0.0.1:{bare_server.port}/vora", timeout=10, allow_redirects=False)
    assert response.status_code == 308
    assert response.headers["Location"].endswith("/vora/")
    assert requests.get(f"http://127.0.0.1:{bare_server.port}/vora/identity", timeout=10).status_code == 401
