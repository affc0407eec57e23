"""Tests of what VORA serves to browsers: the console, its configuration and Swagger UI's OAuth2 login."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis
import yaml
from flask.testing import FlaskClient

from vora.app import create_app
from vora.core.catalog import ALL_SCOPES
from vora.core.settings import DEFAULT_CONSOLE_SDK, DEFAULT_SPEC_DIR, Settings, SettingsError

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
        assert b'type="module" src="console.js"' in page.data
    with client.get("/vora/console/console.js") as script:
        assert script.mimetype in {"text/javascript", "application/javascript"}
    for answer in (page, script, client.get("/vora/console/config.json")):
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    missing = client.get("/vora/console/nothing.js")
    assert missing.status_code == 404
    assert missing.get_json()["status"] == "404"


def test_console_serves_the_sdk_bundle_it_is_configured_with(
    settings: Settings, redisdb: redis.Redis, tmp_path: Path
) -> None:
    """VORA_CONSOLE_SDK's file and its map are served at sdk/vora-client.js(.map), secured; nothing else beside them."""
    bundle = tmp_path / "bundle.js"
    bundle.write_text("export const built = true;\n")
    (tmp_path / "bundle.js.map").write_text("{}")
    (tmp_path / "secret.txt").write_text("not for browsers")
    client = create_app(settings.with_changes(console_sdk=bundle)).test_client()
    with client.get("/vora/console/sdk/vora-client.js") as script:
        assert script.status_code == 200
        assert script.mimetype in {"text/javascript", "application/javascript"}
        assert script.data == bundle.read_bytes()
        assert script.headers["X-Content-Type-Options"] == "nosniff"
    with client.get("/vora/console/sdk/vora-client.js.map") as source_map:
        assert source_map.data == b"{}"
    for other in ("sdk/secret.txt", "sdk/bundle.js", "sdk/../sdk/secret.txt"):
        assert client.get(f"/vora/console/{other}").status_code == 404


def test_console_without_an_sdk_bundle_answers_404_in_the_error_shape(settings: Settings, redisdb: redis.Redis) -> None:
    """With VORA_CONSOLE_SDK empty or its file missing, the bundle is a 404 in the error shape; the page loads."""
    for bundle in (None, DEFAULT_SPEC_DIR / "no-such-bundle.js"):
        client = create_app(settings.with_changes(console_sdk=bundle)).test_client()
        missing = client.get("/vora/console/sdk/vora-client.js")
        assert missing.status_code == 404
        assert missing.get_json()["status"] == "404"
        with client.get("/vora/console/") as page:
            assert page.status_code == 200


def test_console_sdk_setting_is_read_from_the_environment(tmp_path: Path) -> None:
    """VORA_CONSOLE_SDK names the bundle; empty means none; the default is the one `make sdk` builds."""
    assert Settings.from_env({"VORA_CONSOLE_SDK": str(tmp_path / "b.js")}).console_sdk == tmp_path / "b.js"
    assert Settings.from_env({"VORA_CONSOLE_SDK": ""}).console_sdk is None
    assert Settings.from_env({}).console_sdk == DEFAULT_CONSOLE_SDK
    assert DEFAULT_CONSOLE_SDK.parts[-3:] == ("build", "console", "vora-client.js")


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
