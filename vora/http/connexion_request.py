"""Hand Connexion's decorators the Flask request part by part, reading only what an operation uses."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from connexion.lifecycle import ConnexionRequest


class LazyConnexionRequest(ConnexionRequest):  # type: ignore[misc] # connexion is untyped
    """Connexion's view of the Flask request, each part read on first use rather than all up front.

    Connexion's own `FlaskApi.get_request` builds the full URL (an IRI conversion of ~30 us),
    parses cookies and files, and reads the body for every request, GET included; most
    operations never look at most of them. Decorators may still assign any part (the URI
    parser replaces query, path_params and form), which a cached_property allows.
    """

    def __init__(self, flask_request: Any, path_params: dict[str, Any], context: dict[str, Any]) -> None:
        # Not super().__init__: it would read every part now.
        self._flask_request = flask_request
        self.method = flask_request.method
        self.path_params = path_params
        self.headers = flask_request.headers
        self.context = context
        self.json_getter = self._read_json

    def _read_json(self) -> Any:
        # Not named _json: ConnexionRequest.json caches its value under that name.
        return self._flask_request.get_json(silent=True)

    @cached_property
    def url(self) -> str:
        """Return the full request URL."""
        url: str = self._flask_request.url
        return url

    @cached_property
    def query(self) -> Any:
        """Return the query arguments."""
        return self._flask_request.args

    @cached_property
    def form(self) -> Any:
        """Return the form fields."""
        return self._flask_request.form

    @cached_property
    def body(self) -> bytes:
        """Return the raw body."""
        body: bytes = self._flask_request.get_data()
        return body

    @cached_property
    def files(self) -> Any:
        """Return the uploaded files."""
        return self._flask_request.files

    @cached_property
    def cookies(self) -> Any:
        """Return the cookies."""
        return self._flask_request.cookies
