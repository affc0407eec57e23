"""Tests of the lazy request view Connexion's decorators get."""

from __future__ import annotations

import json

from flask import Flask, request

from vora.http.connexion_request import LazyConnexionRequest


def test_reads_no_part_of_the_request_until_asked() -> None:
    """Building the view computes no URL and reads no body; each part then equals the Flask request's."""
    app = Flask(__name__)
    body = json.dumps({"identity": "910111000"}).encode()
    with app.test_request_context(
        "/vora/identity/setup?x=1", method="POST", data=body, content_type="application/json"
    ):
        view = LazyConnexionRequest(request, {"identity": "910111000"}, {})
        assert "url" not in request.__dict__
        assert "_cached_data" not in request.__dict__
        assert view.url == "http://localhost/vora/identity/setup?x=1"
        assert view.query["x"] == "1"
        assert view.body == body
        assert view.json == {"identity": "910111000"}
        assert view.method == "POST"
        assert view.path_params == {"identity": "910111000"}


def test_a_decorator_may_replace_a_part() -> None:
    """A part assigned by a decorator (as Connexion's URI parser does) replaces what the request holds."""
    app = Flask(__name__)
    with app.test_request_context("/vora/identity?x=1"):
        view = LazyConnexionRequest(request, {}, {})
        view.query = {"x": ["2"]}
        view.form = {}
        assert view.query == {"x": ["2"]}
        assert view.form == {}
