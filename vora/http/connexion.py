"""The Connexion glue both apps share: the API class, the resolver, the names of operations, spec-driven routes."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import flask
from connexion.apis.flask_api import FlaskApi
from connexion.exceptions import OAuthProblem, ResolverError
from connexion.handlers import ResolverErrorHandler
from connexion.jsonifier import Jsonifier
from connexion.resolver import Resolution, Resolver
from connexion.security import FlaskSecurityHandlerFactory
from flask import Flask, request
from flask.globals import request_ctx

from vora.http.bearer import authorization_parts
from vora.http.connexion_request import LazyConnexionRequest
from vora.http.hooks import done_by_fast_path
from vora.http.operations import handler_classes

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class UnbuiltHandlers(RuntimeError):
    """A tag's handler class is written but the app was given no object of it, so its operations have no handler."""


class TagResolver(Resolver):  # type: ignore[misc] # connexion is untyped
    """Bind each operationId to the method of that name on the handler object of the operation's first tag.

    Each spec has its own handler package (vora.rest.handlers, vora.server_api.handlers), one module
    a tag; the app builds one handler object a tag with what its operations need. An operation no
    handler object has falls back to a function of that name in the tag's module: a stub written by
    `vora scaffold` (it needs nothing), or none, which Connexion answers 501 in development.
    """

    def __init__(self, spec: dict[str, Any], package: str, handlers: Mapping[str, object]) -> None:
        super().__init__()
        self._package = package
        self._handlers = dict(handlers)
        self._tags = {
            (path, method.upper()): operation["tags"][0].lower()
            for path, item in spec.get("paths", {}).items()
            for method, operation in item.items()
            if method in HTTP_METHODS
        }

    def resolve(self, operation: Any) -> Resolution:
        """Return the handler of an operation, named <package>.<tag>.<operationId>."""
        tag = self._tags[(operation.path, operation.method.upper())]
        name = f"{self._package}.{tag}.{operation.operation_id}"
        handler = getattr(self._handlers.get(tag), operation.operation_id, None)
        if handler is None:
            self._refuse_unbuilt_handler_class(tag, operation.operation_id)
            handler = self.resolve_function_from_operation_id(name)
        return Resolution(handler, name)

    def _refuse_unbuilt_handler_class(self, tag: str, operation_id: str) -> None:
        """Fail the start when a handler class has the method but the app builds no object of that class."""
        module_name = f"{self._package}.{tag}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return
        for handlers in handler_classes(module):
            if callable(getattr(handlers, operation_id, None)) and tag not in self._handlers:
                raise UnbuiltHandlers(
                    f"{module_name}.{handlers.__name__}.{operation_id} is written, but the app builds no "
                    f"{handlers.__name__}: add {tag!r}: {handlers.__name__}(...) to the handlers it gives "
                    f"TagResolver (create_rest_app in vora/rest/app.py, create_server_app in vora/server_api/app.py)"
                )

    def resolve_function_from_operation_id(self, operation_id: str) -> Any:
        """Import a handler function, or say which one is missing and how to write it (501 in development)."""
        try:
            return super().resolve_function_from_operation_id(operation_id)
        except ResolverError as exc:
            function = operation_id.rsplit(".", 1)[-1]
            raise ResolverError(
                f"Operation {function} has no handler {operation_id} yet; `vora scaffold {function}` writes one",
                exc.exc_info,
            ) from None


class VoraFlaskApi(FlaskApi):  # type: ignore[misc] # connexion is untyped
    """Connexion's Flask API with compact JSON, VORA's reading of the Authorization header, its operations kept."""

    # The security functions the spec names (x-tokenInfoFunc...), bound to this app's own objects.
    security_functions: ClassVar[Mapping[str, Callable[..., Any]]] = {}

    def _add_operation_internal(self, method: str, path: str, operation: Any) -> None:
        """Bind an operation's handler to its Flask route, and keep the operation for the fast path."""
        # Connexion adds the operations while its own __init__ runs: no __init__ of ours could come first.
        if not isinstance(operation, ResolverErrorHandler):  # a development 501 has nothing for the fast path
            self.__dict__.setdefault("added_operations", []).append((method, path, operation))
        super()._add_operation_internal(method, path, operation)

    @classmethod
    def _set_jsonifier(cls) -> None:
        """Serialize compact JSON: Connexion's default indent forces Python's slow pure-Python encoder."""
        # A class attribute would not do: Connexion's metaclass calls this after the class body and overwrites it.
        cls.jsonifier = Jsonifier(flask.json)

    def make_security_handler_factory(self, pass_context_arg_name: str | None) -> BearerSecurityHandlerFactory:
        """Build the security handlers: VORA's reading of the header, the spec's functions bound to this app."""
        return BearerSecurityHandlerFactory(pass_context_arg_name, self.security_functions)

    @classmethod
    def get_request(cls, *args: Any, **params: Any) -> LazyConnexionRequest:
        """Wrap the Flask request for Connexion's decorators without reading any part of it yet."""
        context: dict[str, Any] = {}
        setattr(request_ctx, "connexion_context", context)  # where connexion.context reads it  # noqa: B010
        return LazyConnexionRequest(flask.request, params, context)

    @classmethod
    def get_response(cls, response: Any, mimetype: str | None = None, request: Any = None) -> Any:
        """Turn a handler's answer into a Flask response, without the full URL Connexion builds only for debug logs."""
        return cls._get_response(response, mimetype=mimetype)


def api_class(security_functions: Mapping[str, Callable[..., Any]]) -> type[VoraFlaskApi]:
    """Return the API class of one app, whose spec's security functions are bound to that app's objects."""
    return type("BoundVoraFlaskApi", (VoraFlaskApi,), {"security_functions": dict(security_functions)})


def allowed_methods_of(spec: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Map each spec path to the methods it declares, upper-cased."""
    return {path: tuple(m.upper() for m in HTTP_METHODS if m in item) for path, item in spec.get("paths", {}).items()}


def flask_rule(base_path: str, spec_path: str) -> str:
    """Turn a spec path like /logout/{identity} into the Flask rule Connexion registers."""
    return base_path + re.sub(r"\{(\w+)\}", r"<\1>", spec_path)


def operation_ids_of(spec: dict[str, Any], base_path: str) -> dict[tuple[str, str], str]:
    """Map (Flask rule, METHOD) to the spec's operationId."""
    return {
        (flask_rule(base_path, path), method.upper()): operation["operationId"]
        for path, item in spec.get("paths", {}).items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def name_operations(app: Flask, spec: dict[str, Any], base_path: str) -> None:
    """Put each request's spec operationId in its environ, for logs and metrics."""
    operations = operation_ids_of(spec, base_path)

    @app.before_request
    @done_by_fast_path
    def name_operation() -> None:
        rule = request.url_rule
        if rule is not None:
            # setdefault: the socket route named its requests "websocket" before (they are no spec operation).
            request.environ.setdefault("vora.operation", operations.get((rule.rule, request.method)))


def route_spec_options(app: Flask, base_path: str, methods: dict[str, tuple[str, ...]]) -> None:
    """Let the spec's own OPTIONS operations answer instead of Flask's automatic ones."""
    with_options = {flask_rule(base_path, p) for p, m in methods.items() if "OPTIONS" in m}
    for rule in app.url_map.iter_rules():
        if rule.rule in with_options and getattr(rule, "provide_automatic_options", False):
            rule.provide_automatic_options = False  # type: ignore[attr-defined] # Flask sets it on its rules; werkzeug's Rule does not declare it
            rule.methods = (rule.methods or set()) - {"OPTIONS"}
    app.url_map._remap = True


class BearerSecurityHandlerFactory(FlaskSecurityHandlerFactory):  # type: ignore[misc] # connexion is untyped
    """Connexion's security handlers, reading the Authorization header with authorization_parts.

    A security function the spec names (x-tokenInfoFunc, x-bearerInfoFunc) is the one the app bound
    to that name, a method of the app's own verifier or key set; Connexion would import a module-level
    function instead, which could reach the app's objects only through global state.
    """

    def __init__(
        self, pass_context_arg_name: str | None, bound: Mapping[str, Callable[..., Any]] | None = None
    ) -> None:
        super().__init__(pass_context_arg_name)
        self._bound = dict(bound or {})

    def _bound_function(self, security_definition: dict[str, Any], key: str) -> Callable[..., Any]:
        """Return the function bound to the name the spec gives under key."""
        name = security_definition[key]
        if name not in self._bound:
            raise ValueError(f"{key} {name!r} is not bound by this app (bound: {', '.join(sorted(self._bound))})")
        return self._bound[name]

    def get_tokeninfo_func(self, security_definition: dict[str, Any]) -> Callable[..., Any] | None:
        """Return the app's bound token verification function (x-tokenInfoFunc), else Connexion's choice."""
        if "x-tokenInfoFunc" not in security_definition:
            return super().get_tokeninfo_func(security_definition)  # type: ignore[no-any-return] # connexion is untyped
        return self._bound_function(security_definition, "x-tokenInfoFunc")

    def get_bearerinfo_func(self, security_definition: dict[str, Any]) -> Callable[..., Any] | None:
        """Return the app's bound bearer verification function (x-bearerInfoFunc), else Connexion's choice."""
        if "x-bearerInfoFunc" not in security_definition:
            return super().get_bearerinfo_func(security_definition)  # type: ignore[no-any-return] # connexion is untyped
        return self._bound_function(security_definition, "x-bearerInfoFunc")

    @staticmethod
    def get_auth_header_value(request: Any) -> tuple[str | None, str | None]:
        """Return the scheme and credentials, (None, None) without a header; raise OAuthProblem on a bad one."""
        header = request.headers.get("Authorization")
        if not header:
            return None, None
        parts = authorization_parts(header)
        if parts is None:
            raise OAuthProblem(description="Invalid authorization header")
        return parts
