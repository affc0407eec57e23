"""Build a Flask app on one OpenAPI document the way every VORA app is built: strict, bounded, in the error shape."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import connexion
from connexion.apps.flask_app import FlaskJSONProvider, IntegerConverter, NumberConverter
from connexion.resolver import Resolver
from flask import Flask, Response

from vora.core.settings import Settings
from vora.http.bodies import BODY_GATE, BodyGate
from vora.http.connexion import api_class, name_operations
from vora.http.errors import install_error_handlers
from vora.http.json_provider import BoundedJSONProvider
from vora.http.operations import resolver_error_status
from vora.http.validation import NamingParameterValidator, RuleNamingBodyValidator
from vora.observability.metrics import Metrics


class SortedOptionsFlask(Flask):
    """Flask, listing Allow sorted in its automatic OPTIONS answers (werkzeug: a set's order, varying by process)."""

    def make_default_options_response(self) -> Response:
        """Answer OPTIONS as Flask does, with the methods sorted (as the 405 answers' Allow is)."""
        response = super().make_default_options_response()
        response.headers["Allow"] = ", ".join(sorted(response.allow))
        return response


class _ConnexionApp(connexion.FlaskApp):  # type: ignore[misc] # connexion is untyped
    """Connexion's app on a SortedOptionsFlask."""

    def create_app(self) -> Flask:
        """Build the Flask app as Connexion 2.15's create_app does, of the class that sorts OPTIONS' Allow."""
        app = SortedOptionsFlask(self.import_name, **self.server_args)
        app.json = FlaskJSONProvider(app)
        app.url_map.converters["float"] = NumberConverter
        app.url_map.converters["int"] = IntegerConverter
        return app


def build_spec_app(
    settings: Settings,
    spec: dict[str, Any],
    spec_file: str,
    *,
    security: Mapping[str, Callable[..., Any]],
    resolver: Resolver,
    max_body_bytes: int,
    metrics: Metrics,
    options: Mapping[str, Any],
    served_spec: dict[str, Any] | None = None,
    sort_keys: bool = False,
) -> tuple[Flask, Any]:
    """Return a Connexion-built app for spec, and its API object, with what every VORA app shares.

    Shared: strict validation of parameters and bodies (bodies with the rule named in the error),
    the spec's bearer checks bound to security, JSON nested at most 64 levels, the body limit and
    the gate that reads a body only where an operation declares one, the error shape, each route
    named after its operationId, and Allow sorted in Flask's automatic OPTIONS answers. served_spec
    is the document Connexion serves when it differs (the public API's is trimmed for Swagger UI);
    sort_keys orders answers' keys (otherwise the spec's order).
    """
    cx = _ConnexionApp(__name__, specification_dir=str(settings.spec_dir))
    cx.api_cls = api_class(security)
    api = cx.add_api(
        served_spec if served_spec is not None else spec,
        resolver=resolver,
        strict_validation=True,
        validate_responses=False,
        validator_map={"body": RuleNamingBodyValidator, "parameter": NamingParameterValidator},
        options=dict(options),
        resolver_error=resolver_error_status(settings.development, settings.spec_dir, spec_file),
    )
    app: Flask = cx.app
    app.json = BoundedJSONProvider(app)
    app.json.sort_keys = sort_keys
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.extensions[BODY_GATE] = BodyGate.from_spec(spec, api.base_path)
    install_error_handlers(app, metrics)
    name_operations(app, spec, api.base_path)
    return app, api
