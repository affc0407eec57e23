"""Tests of the AsyncAPI page's routes (the page itself renders in tests/browser/test_asyncapi_page.py)."""

from __future__ import annotations

from pathlib import Path

import redis
from flask.testing import FlaskClient

from vora.app import create_app
from vora.core.settings import DEFAULT_SPEC_DIR, Settings
from vora.events.publisher import ASYNCAPI_FILE
from vora.rest.asyncapi_page import STATIC_DIR


def test_the_page_and_its_document_are_served(client: FlaskClient) -> None:
    """/vora/asyncapi/ serves the page, the AsyncAPI document byte for byte, and the vendored renderer."""
    with client.get("/vora/asyncapi/") as page:
        assert page.status_code == 200
        assert page.mimetype == "text/html"
        assert b"vendor/asyncapi-standalone.js" in page.data
    with client.get(f"/vora/asyncapi/{ASYNCAPI_FILE}") as document:
        assert document.status_code == 200
        assert document.mimetype == "application/yaml"
        assert document.data == (DEFAULT_SPEC_DIR / ASYNCAPI_FILE).read_bytes()
    with client.get("/vora/asyncapi/vendor/asyncapi-standalone.js") as bundle:
        assert bundle.status_code == 200, "run `make install`: it vendors @asyncapi/react-component's bundle"
        assert b"AsyncApiStandalone" in bundle.data
    with client.get("/vora/asyncapi/vendor/asyncapi.css") as stylesheet:
        assert stylesheet.status_code == 200


def test_an_unknown_asset_is_a_404_in_the_error_shape(client: FlaskClient) -> None:
    """A missing file under /vora/asyncapi/ answers 404 in the VORA error shape."""
    response = client.get("/vora/asyncapi/vendor/nothing.js")
    assert response.status_code == 404
    assert set(response.get_json()) == {"timestamp", "status", "error", "message"}


def test_no_external_url_is_loaded() -> None:
    """The page loads its script and stylesheet from VORA itself: the network may be loopback only."""
    html = (STATIC_DIR / "index.html").read_text()
    assert "http://" not in html
    assert "https://" not in html


def test_the_renderer_comes_from_the_folder_vora_asyncapi_page_names(
    settings: Settings, redisdb: redis.Redis, tmp_path: Path
) -> None:
    """VORA_ASYNCAPI_PAGE's folder serves the renderer; unset, its paths are 404s in the error shape, the page loads."""
    (tmp_path / "asyncapi.css").write_text("body { color: black }")
    served = create_app(settings.with_changes(asyncapi_page=tmp_path)).test_client()
    with served.get("/vora/asyncapi/vendor/asyncapi.css") as stylesheet:
        assert stylesheet.data == b"body { color: black }"
    assert served.get("/vora/asyncapi/vendor/asyncapi-standalone.js").status_code == 404
    unset = create_app(settings.with_changes(asyncapi_page=None)).test_client()
    missing = unset.get("/vora/asyncapi/vendor/asyncapi.css")
    assert (missing.status_code, missing.get_json()["status"]) == (404, "404")
    with unset.get("/vora/asyncapi/") as page:
        assert page.status_code == 200


def test_asyncapi_page_setting_is_read_from_the_environment(tmp_path: Path) -> None:
    """VORA_ASYNCAPI_PAGE is a folder, or empty for none."""
    assert Settings.from_env({"VORA_ASYNCAPI_PAGE": str(tmp_path)}).asyncapi_page == tmp_path
    assert Settings.from_env({"VORA_ASYNCAPI_PAGE": ""}).asyncapi_page is None
