"""The browser side of VORA: the web console at /vora/console/ and Swagger UI's OAuth2 login."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, send_from_directory

from vora.core.catalog import ALL_SCOPES
from vora.core.settings import Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"


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

    @console.get("/")
    def console_page() -> Response:
        return send_from_directory(STATIC_DIR, "index.html", max_age=0)

    @console.get("/config.json")
    def console_config() -> Response:
        return jsonify(
            {
                "issuer": settings.oauth_issuer if login_configured(settings) else None,
                "clientId": settings.oauth_web_client_id,
                "scopes": ["openid", *ALL_SCOPES],
                "apiBase": base_path,
                "socketPath": f"{base_path}/ws",
            }
        )

    @console.get("/<path:filename>")
    def console_asset(filename: str) -> Response:
        return send_from_directory(STATIC_DIR, filename, max_age=0)

    app.register_blueprint(console)
