"""The landing page at /vora/: where the console, both Swagger UIs, the event contract and health are."""

from __future__ import annotations

import base64
import hashlib
import html
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import yaml
from flask import Flask, Response, request

from vora.core.settings import Settings

SERVER_SPEC_FILE: Final = "vora-server.yaml"
WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})  # the wildcards: not an address a browser can use

# Inline, allowed by its hash: the page needs no second request and the policy stays 'self'-only.
STYLE: Final = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:0 auto;padding:1rem;color:#111;background:#fff}"
    "h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:1.5rem}ul{padding-left:1.2rem}li{margin:.3rem 0}"
    "code{font-size:.9em;overflow-wrap:anywhere}a{color:#0645ad}.note{color:#444}"
    "@media (prefers-color-scheme:dark){body{color:#eee;background:#111}a{color:#8ab4f8}.note{color:#bbb}}"
)
STYLE_HASH: Final = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def server_api_base_path(spec_dir: Path) -> str:
    """Return the server API's base path, as the first server of spec/vora-server.yaml names it."""
    document = yaml.safe_load((spec_dir / SERVER_SPEC_FILE).read_text())
    url: str = document["servers"][0]["url"]
    return urlsplit(url).path.rstrip("/")


def _link(href: str, text: str, note: str = "") -> str:
    tail = f' <span class="note">{html.escape(note)}</span>' if note else ""
    return f'<li><a href="{html.escape(href)}">{html.escape(text)}</a>{tail}</li>'


def _text(text: str, code: str = "") -> str:
    shown = f" <code>{html.escape(code)}</code>" if code else ""
    return f"<li>{html.escape(text)}{shown}</li>"


def server_api_origin(settings: Settings, request_host: str) -> str:
    """Return the scheme://host:port a browser on this machine reaches the server API's listener at."""
    host = settings.server_api_host
    if host in WILDCARD_HOSTS:
        host = urlsplit(f"//{request_host}").hostname or "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.server_api_port}"


def landing_page(settings: Settings, base_path: str, server_base: str, request_host: str) -> str:
    """Render the landing page's HTML."""
    base = base_path.rstrip("/")
    public = [
        _link(f"{base}/console/", "Web console", "log in, open a session, watch events arrive"),
        _link(f"{base}/ui/", "Public API: Swagger UI", "spec/vora.yaml; Authorize logs in"),
        _link(f"{base}/openapi.json", "Public API: OpenAPI document"),
        _link(f"{base}/asyncapi/", "Event contract (AsyncAPI), rendered", "the WebSocket and SSE messages"),
        _link(f"{base}/asyncapi/vora-events.asyncapi.yaml", "Event contract: AsyncAPI document"),
    ]
    if settings.server_api_enabled:
        origin = server_api_origin(settings, request_host)
        server = [
            _link(f"{origin}{server_base}/ui/", "Server API: Swagger UI", "spec/vora-server.yaml; needs a key"),
            _link(f"{origin}{server_base}/openapi.json", "Server API: OpenAPI document"),
        ]
    else:
        server = [_text("The server API is off: it listens only while a key is configured", "VORA_SERVER_API_KEYS")]
    if settings.console_simulator:
        simulator = [
            _text("On (VORA_CONSOLE_SIMULATOR): the console's simulator panel publishes to your own identities with"),
            _text("templates:", f"GET {base}/console/simulator"),
            _text("publish:", f"POST {base}/console/simulator/{{identity}}/events"),
            _text("sessions and online state:", f"GET {base}/console/simulator/{{identity}}"),
        ]
    else:
        simulator = [_text("Off; development only: turn it on with", "VORA_CONSOLE_SIMULATOR=1")]
    # Not links: both answer 204 No Content, which a browser shows as nothing happening.
    health = [
        _text("Liveness, 204 while the process serves:", f"GET {base}/health/liveness"),
        _text(
            "Readiness, 204 while Redis and the identity directory are there, else 503:", f"GET {base}/health/readiness"
        ),
        _text(f"Prometheus metrics on port {settings.metrics_port}:", "/metrics")
        if settings.metrics_port
        else _text("Prometheus metrics are off", "VORA_METRICS_PORT=0"),
    ]
    docs = [
        _text("In the repository:", "README.md"),
        _text("The console and its simulator:", "docs/console.md"),
        _text("Every setting:", "docs/configuration.md"),
        _text("Event channel:", "docs/websocket.md"),
        _text("Server API:", "docs/server-api.md"),
    ]
    sections = [
        ("Browser tools", public),
        ("Server API (telephony side)", server),
        ("Telephony simulator", simulator),
        ("Health", health),
        ("Documentation", docs),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2><ul>{''.join(items)}</ul>" for title, items in sections)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>VORA</title><style>{STYLE}</style></head><body>"
        f"<h1>VORA</h1><p>Telephony events for softphones: REST at <code>{html.escape(base)}</code>, "
        f"events at <code>{html.escape(base)}/ws</code> and <code>{html.escape(base)}/sse</code>.</p>"
        f"{body}</body></html>"
    )


def install_landing(app: Flask, base_path: str, settings: Settings) -> None:
    """Serve the landing page at base_path/ (GET)."""
    server_base = server_api_base_path(settings.spec_dir)

    def landing() -> Response:
        page = landing_page(settings, base_path, server_base, request.host)
        response = Response(page, mimetype="text/html")
        response.headers.update(SECURITY_HEADERS)
        return response

    app.add_url_rule(f"{base_path.rstrip('/')}/", "vora_landing", landing, methods=["GET"])
