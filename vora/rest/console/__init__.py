"""The browser side of VORA: the web console at /vora/console/ (on the TypeScript SDK) and Swagger UI's OAuth2 login."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, abort, jsonify, request, send_from_directory

from vora.core.catalog import ALL_SCOPES
from vora.core.settings import Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The name the page imports the SDK's browser bundle by (./sdk/vora-client.js), whatever its file is called.
SDK_FILE = "vora-client.js"


def login_configured(settings: Settings) -> bool:
    """Tell whether browsers can log in: the issuer is an authorization server's URL."""
    return settings.oauth_issuer.startswith(("http://", "https://"))


def served_spec(spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Return a copy of the OpenAPI document to serve, with the configured authorization server's URLs."""
    served = copy.deepcopy(spec)
    if not settings.oauth_authorization_url:
        return served
    for flow in served["components"]["securitySchemes"]["security_auth"]["flows"].values():
        flow["authorizationUrl"] = settings.oauth_authorization_url
        flow["tokenUrl"] = settings.oauth_token_url
    return served


def _origin_of(url: str) -> str | None:
    """Return the scheme://host[:port] of an http(s) URL, or None for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def console_security_headers(settings: Settings) -> dict[str, str]:
    """Return the headers every console answer carries: its own scripts only, never framed, never sniffed."""
    # The page fetches the issuer's discovery document and token endpoint, and opens /vora/ws
    # ('self' covers ws: and wss: to the same host in CSP Level 3); nothing else leaves it.
    connect = ["'self'"]
    for url in (settings.oauth_issuer if login_configured(settings) else "", settings.oauth_token_url):
        origin = _origin_of(url)
        if origin is not None and origin not in connect:
            connect.append(origin)
    policy = "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src {' '.join(connect)}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        # The page's URL carries the authorization code after login: no Referer may repeat it.
        "Referrer-Policy": "no-referrer",
    }


def swagger_ui_options(settings: Settings) -> dict[str, Any]:
    """Return Connexion's Swagger UI options: Authorize logs in with authorization code + PKCE."""
    options: dict[str, Any] = {"swagger_ui": True}
    if settings.oauth_authorization_url:
        options["swagger_ui_template_arguments"] = {
            "initOAuth": {
                "clientId": settings.oauth_web_client_id,
                "usePkceWithAuthorizationCodeGrant": True,
                "scopes": list(ALL_SCOPES),
            }
        }
    return options


def install_console(app: Flask, base_path: str, settings: Settings) -> None:
    """Serve the web console and its configuration under base_path/console/."""
    console = Blueprint("vora_console", __name__, url_prefix=f"{base_path}/console")
    # Set by each view, not an after_request hook: any such hook would turn the fast path off (vora.http.fast_path).
    security_headers = console_security_headers(settings)

    def secured(response: Response) -> Response:
        response.headers.update(security_headers)
        return response

    @console.get("/")
    def console_page() -> Response:
        return secured(send_from_directory(STATIC_DIR, "index.html", max_age=0))

    @console.get("/config.json")
    def console_config() -> Response:
        return secured(
            jsonify(
                {
                    "issuer": settings.oauth_issuer if login_configured(settings) else None,
                    "clientId": settings.oauth_web_client_id,
                    "scopes": ["openid", *ALL_SCOPES],
                    "apiBase": base_path,
                    "socketPath": f"{base_path}/ws",
                }
            )
        )

    @console.get(f"/sdk/{SDK_FILE}")
    @console.get(f"/sdk/{SDK_FILE}.map")
    def console_sdk() -> Response:
        # Only the bundle `make sdk` builds (VORA_CONSOLE_SDK) and its source map: nothing else beside them.
        bundle = settings.console_sdk
        if bundle is None:
            abort(404)
        name = bundle.name + (".map" if request.path.endswith(".map") else "")
        return secured(send_from_directory(bundle.parent, name, max_age=0))

    @console.get("/<path:filename>")
    def console_asset(filename: str) -> Response:
        return secured(send_from_directory(STATIC_DIR, filename, max_age=0))

    app.register_blueprint(console)
