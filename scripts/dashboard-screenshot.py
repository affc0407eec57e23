"""Render the dashboard's main queries on Prometheus' graph page in headless Chromium: docs/images/*.png.

Grafana is in neither Debian's main archive nor PyPI, so this starts what the observability tests start
(redis-server, VORA under gunicorn with two workers, Debian's Prometheus scraping it every second), drives a
bounded load for LOAD_SECONDS (a few sockets that come and go, a few events a second, a refused handshake now
and then), then screenshots one Prometheus graph page holding the PANELS queries. Run it from the repository:
`.venv/bin/python scripts/dashboard-screenshot.py` (needs `make test-tools`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402 - after the repository is importable
import requests  # noqa: E402
import websocket  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

from testbed.redis_procs import RedisServer  # noqa: E402
from testbed.vora_server import running_server  # noqa: E402
from tests.harness.prometheus import DASHBOARD, running_prometheus  # noqa: E402
from vora.auth.devkeys import create_dev_key, mint_token  # noqa: E402
from vora.core.catalog import ALL_SCOPES  # noqa: E402
from vora.core.settings import Settings  # noqa: E402
from vora.services import build_stores  # noqa: E402
from vora.store import keys  # noqa: E402

OUTPUT = REPO / "docs" / "images" / "dashboard-prometheus.png"
PANELS = (  # (panel title, refId of the query shown)
    ("Publish-to-delivery latency", "A"),
    ("Open connections", "A"),
    ("Events", "C"),
    ("Closes by code", "A"),
    ("Handshake refusals by reason", "A"),
    ("Worker memory", "A"),
)
WIDTH = 1400
LOAD_SECONDS = 150
IDENTITY = "910111000"
SOCKETS = 4
EVENTS_PER_SECOND = 5


def panel_queries() -> list[str]:
    """Return the chosen query of each chosen panel, with Grafana's variables expanded."""
    board = json.loads(DASHBOARD.read_text())
    exprs = {
        (panel["title"], target["refId"]): target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
    }
    return [exprs[chosen].replace("$__rate_interval", "30s").replace("$instance", ".*") for chosen in PANELS]


def graph_url(base: str, queries: list[str]) -> str:
    """Return a Prometheus graph page URL showing each query as a graph over the load."""
    params = {}
    for index, expr in enumerate(queries):
        params.update({f"g{index}.expr": expr, f"g{index}.tab": "0", f"g{index}.range_input": "3m"})
    return f"{base}/graph?{urllib.parse.urlencode(params)}"


def drain(sockets: list[websocket.WebSocket]) -> None:
    """Read what each socket has waiting; forget those the server closed (a session replaced by a newer one)."""
    for ws in list(sockets):
        ws.settimeout(0.05)
        try:
            while ws.recv():
                pass
        except websocket.WebSocketTimeoutException:
            pass
        except websocket.WebSocketConnectionClosedException:
            sockets.remove(ws)


def drive_load(base_url: str, ws_url: str, token: str, settings: Settings) -> None:
    """Keep a few sockets open and replaced, publish a few events a second, and refuse a handshake now and then."""
    publisher = build_stores(settings).publisher
    headers = {"Authorization": f"Bearer {token}"}
    sockets: list[websocket.WebSocket] = []
    deadline = time.monotonic() + LOAD_SECONDS
    tick = 0
    try:
        while time.monotonic() < deadline:
            tick += 1
            if len(sockets) < SOCKETS + tick % 3:
                setup = requests.post(
                    f"{base_url}/identity/setup",
                    json={"connectionType": "WebSocket", "identity": IDENTITY},
                    headers=headers,
                    timeout=5,
                )
                sockets.append(websocket.create_connection(f"{ws_url}?token={setup.json()['webSocketToken']}"))
            elif sockets and tick % 7 == 0:
                sockets.pop(0).close()
            if tick % 5 == 0:
                with contextlib.suppress(websocket.WebSocketBadStatusException):
                    websocket.create_connection(f"{ws_url}?token=v1.unknown").close()
            for _ in range(EVENTS_PER_SECOND):
                publisher.publish(IDENTITY, "callRinging", {"callId": f"call-{tick}"})
            drain(sockets)
            time.sleep(1)
    finally:
        for ws in sockets:
            ws.close()


def screenshot(url: str) -> None:
    """Open url in headless Chromium and save the page as OUTPUT once every graph has drawn."""
    options = webdriver.ChromeOptions()
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    flags.append(f"--window-size={WIDTH},900")
    for flag in flags:
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "chromium"
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
    try:
        driver.get(url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(driver.find_elements("css selector", ".graph-legend")) < len(PANELS):
            time.sleep(0.5)
        # The whole page in one image: a window as tall as the page, scrolled to its top, no field focused.
        height = driver.execute_script("document.activeElement.blur(); return document.body.scrollHeight")
        driver.set_window_size(WIDTH, int(height) + 200)
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(2)  # the graphs redraw at the new size
        OUTPUT.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(OUTPUT))
    finally:
        driver.quit()


def main() -> None:
    """Start everything, load it, take the screenshot."""
    with tempfile.TemporaryDirectory(prefix="vora-screenshot-") as scratch, RedisServer() as redis_server:
        work = Path(scratch)
        key = work / "dev-key.pem"
        create_dev_key(key)
        env = {"VORA_REDIS_URL": redis_server.url, "VORA_DEV_KEY": str(key)}
        settings = Settings.from_env(env)
        redis.Redis.from_url(redis_server.url).sadd(keys.user_identities("demo"), IDENTITY)
        token = mint_token(key.read_bytes(), "demo", settings.oauth_issuer, settings.oauth_audience, ALL_SCOPES, 3600)
        with running_server(env, work, workers=2) as server:
            (work / "prometheus").mkdir()
            with running_prometheus(work / "prometheus", [f"127.0.0.1:{server.metrics_port}"]) as prometheus:
                drive_load(server.base_url, server.ws_url, token, settings)
                screenshot(graph_url(prometheus.url, panel_queries()))
    sys.stdout.write(f"wrote {OUTPUT}\n")


if __name__ == "__main__":
    main()
