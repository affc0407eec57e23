"""Tests of what VORA serves to browsers: the console, its configuration and Swagger UI's OAuth2 login."""

from __future__ import annotations

import json
import re

import pytest
import redis
import yaml
from flask.testing import FlaskClient

from vora.app import create_app
from vora.devkeys import ALL_SCOPES
from vora.settings import DEFAULT_SPEC_DIR, Settings, SettingsError

PROVIDER = "http://127.0.0.1:18087"
LOGIN_SETTINGS = {
    "oauth_issuer": PROVIDER,
    "oauth_authorization_url": f"{PROVIDER}/auth",
    "oauth_token_url": f"{PROVIDER}/token",
    "oauth_web_client_id": "console-client",
}


@pytest.fixture
def login_client(settings: Settings, redisdb: redis.Redis) -> FlaskClient:
    """Return a test client of an app configured with a local authorization server."""
    return create_app(settings.with_changes(**LOGIN_SETTINGS)).test_client()


def seed_flow() -> dict[str, str]:
    """Return the authorizationCode flow as spec/vora.yaml documents it."""
    spec = yaml.safe_load((DEFAULT_SPEC_DIR / "vora.yaml").read_text())
    flow: dict[str, str] = spec["components"]["securitySchemes"]["security_auth"]["flows"]["authorizationCode"]
    return flow


def served_flow(client: FlaskClient) -> dict[str, str]:
    """Return the authorizationCode flow of the OpenAPI document VORA serves."""
    document = client.get("/vora/openapi.json").get_json()
    flow: dict[str, str] = document["components"]["securitySchemes"]["security_auth"]["flows"]["authorizationCode"]
    return flow


def test_served_document_points_at_the_configured_authorization_server(login_client: FlaskClient) -> None:
    """With VORA_OAUTH_AUTHORIZATION_URL/TOKEN_URL set, the served document names them; the spec file is unchanged."""
    flow = served_flow(login_client)
    assert flow["authorizationUrl"] == f"{PROVIDER}/auth"
    assert flow["tokenUrl"] == f"{PROVIDER}/token"
    assert set(flow["scopes"]) == set(ALL_SCOPES)
    assert seed_flow()["authorizationUrl"] != flow["authorizationUrl"]


def test_served_document_keeps_the_seed_urls_by_default(client: FlaskClient) -> None:
    """Without those settings the served document carries the seed's URLs."""
    assert served_flow(client) == seed_flow()


def test_swagger_ui_logs_in_with_pkce_as_the_web_client(login_client: FlaskClient) -> None:
    """Swagger UI's page calls initOAuth with the web client and PKCE for the authorization code grant."""
    page = login_client.get("/vora/ui/").get_data(as_text=True)
    match = re.search(r"ui\.initOAuth\(\s*(\{.*?\})\s*\)", page, re.DOTALL)
    assert match is not None, page
    init = json.loads(match.group(1))
    assert init == {"clientId": "console-client", "usePkceWithAuthorizationCodeGrant": True, "scopes": list(ALL_SCOPES)}
    with login_client.get("/vora/ui/oauth2-redirect.html") as redirect_page:
        assert redirect_page.status_code == 200


def test_swagger_ui_without_an_authorization_server_has_no_oauth_init(client: FlaskClient) -> None:
    """Without an authorization server configured Swagger UI is served without initOAuth."""
    page = client.get("/vora/ui/").get_data(as_text=True)
    assert "SwaggerUIBundle" in page
    assert "initOAuth(" not in page


def test_console_config_names_the_issuer_and_client(login_client: FlaskClient) -> None:
    """The console reads the issuer, its client id, the scopes and the API paths from config.json."""
    config = login_client.get("/vora/console/config.json").get_json()
    assert config == {
        "issuer": PROVIDER,
        "clientId": "console-client",
        "scopes": ["openid", *ALL_SCOPES],
        "apiBase": "/vora",
        "socketPath": "/vora/ws",
    }


def test_console_config_without_an_issuer_url_disables_login(settings: Settings, redisdb: redis.Redis) -> None:
    """When VORA_OAUTH_ISSUER is not a URL (dev-key tokens only) the console says nobody can log in."""
    client = create_app(settings.with_changes(oauth_issuer="vora-dev")).test_client()
    assert client.get("/vora/console/config.json").get_json()["issuer"] is None


def test_console_page_and_assets_are_served(client: FlaskClient) -> None:
    """The console page and its script are served; a missing asset is a 404 in the error shape."""
    with client.get("/vora/console/") as page:
        assert page.status_code == 200
        assert page.mimetype == "text/html"
        assert b'src="console.js"' in page.data
    with client.get("/vora/console/console.js") as script:
        assert script.mimetype in {"text/javascript", "application/javascript"}
    for answer in (page, script, client.get("/vora/console/config.json")):
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    missing = client.get("/vora/console/nothing.js")
    assert missing.status_code == 404
    assert missing.get_json()["status"] == "404"


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"VORA_OAUTH_AUTHORIZATION_URL": f"{PROVIDER}/auth"}, "set together"),
        ({"VORA_OAUTH_AUTHORIZATION_URL": "ftp://x/auth", "VORA_OAUTH_TOKEN_URL": f"{PROVIDER}/token"}, "http"),
    ],
)
def test_login_urls_are_checked(variables: dict[str, str], fragment: str) -> None:
    """The authorization and token URLs must both be http(s) URLs, set together."""
    with pytest.raises(SettingsError, match=fragment):
        Settings.from_env(variables)


def test_console_policy_lets_the_page_reach_only_itself_and_the_issuer(login_client: FlaskClient) -> None:
    """The console's CSP allows its own scripts and styles, and connections to itself and the issuer only."""
    with login_client.get("/vora/console/") as page:
        header = page.headers["Content-Security-Policy"]
    policy = dict(part.strip().split(" ", 1) for part in header.split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == f"'self' {PROVIDER}"
    assert policy["frame-ancestors"] == "'none'"
