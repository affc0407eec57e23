"""The event contract for people: spec/vora-events.asyncapi.yaml rendered in the browser at /vora/asyncapi/."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, abort, send_from_directory

from vora.events.publisher import ASYNCAPI_FILE

STATIC_DIR = Path(__file__).resolve().parent / "static"


def install_asyncapi_page(app: Flask, base_path: str, spec_dir: Path, vendor_dir: Path | None) -> None:
    """Serve the AsyncAPI page, the document it renders and its renderer (from vendor_dir) under base_path/asyncapi/.

    Third-party code stays out of the package: `make install` copies @asyncapi/react-component's standalone
    bundle and stylesheet to build/asyncapi-page (scripts/vendor-asyncapi-page.sh), the image to its own folder;
    VORA_ASYNCAPI_PAGE names it. Without it the renderer's paths answer 404 and the page says so.
    """
    page = Blueprint("vora_asyncapi", __name__, url_prefix=f"{base_path}/asyncapi")

    @page.get("/")
    def asyncapi_page() -> Response:
        return send_from_directory(STATIC_DIR, "index.html", max_age=0)

    @page.get(f"/{ASYNCAPI_FILE}")
    def asyncapi_document() -> Response:
        return send_from_directory(spec_dir, ASYNCAPI_FILE, mimetype="application/yaml", max_age=0)

    @page.get("/vendor/<path:filename>")
    def asyncapi_vendored(filename: str) -> Response:
        # The bundle (3 MB) changes only with tools/package-lock.json: let browsers revalidate, not refetch.
        if vendor_dir is None:
            abort(404)
        return send_from_directory(vendor_dir, filename, max_age=0)

    @page.get("/<path:filename>")
    def asyncapi_asset(filename: str) -> Response:
        # The bundle (3 MB) changes only with tools/package-lock.json: let browsers revalidate, not refetch.
        return send_from_directory(STATIC_DIR, filename, max_age=0)

    app.register_blueprint(page)
