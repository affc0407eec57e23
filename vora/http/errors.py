"""Shape every error VORA sends as {timestamp, status, error, message}."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

import redis
import werkzeug.exceptions
from connexion.exceptions import OAuthProblem, OAuthScopeProblem, ProblemException
from flask import Flask, Response, request

from vora.core.error_shape import (
    body_too_large_message,
    clip,
    clip_echoes,
    error_body,
)
from vora.core.errors import VoraError
from vora.core.log_fields import error_fields
from vora.observability.metrics import Metrics
from vora.store.client import REDIS_ERRORS, REFUSAL_WORDS, UNAVAILABLE, refusal_for_now

log = logging.getLogger("vora.errors")

REALM = "vora"


class InvalidToken(OAuthProblem):  # type: ignore[misc] # connexion is untyped
    """The bearer token is malformed, expired, badly signed or not for VORA."""


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """Build a complete JSON error response."""
    response = Response(json.dumps(error_body(status, message)), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def empty_response(status: int) -> Response:
    """Build a response with no body and so no Content-Type."""
    response = Response(status=status)
    del response.headers["Content-Type"]
    return response


def bearer_challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    """Build an RFC 6750 WWW-Authenticate value."""
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="{}"'.format(description.replace('"', "'")))
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


def readable_validation_message(detail: str) -> str:
    """Turn Connexion's validation detail into one line that names the field first."""
    first = detail.split("\n\n", 1)[0].strip()
    message, separator, location = first.rpartition(" - ")
    if separator and location.startswith("'") and location.endswith("'"):
        return f"{location.strip(chr(39))}: {message}"
    for name, value in (request.view_args or {}).items():
        if repr(value) in first:
            return f"{name}: {first}"
    return first


def install_error_handlers(app: Flask, metrics: Metrics) -> None:
    """Replace Flask's and Connexion's error pages with the VORA error shape; count Redis failures in metrics."""

    def handle_vora_error(exc: VoraError) -> Response:
        cause = exc.__cause__
        if exc.status == 503 and isinstance(cause, REDIS_ERRORS):
            # A rule that answered a Redis failure in its own words (a publish's 503): still the operator's to see.
            log.warning("redis unavailable", extra={"fields": error_fields(cause)})
            metrics.count("redis_error:rest")
        return error_response(exc.status, exc.message, exc.headers)

    def handle_problem(exc: ProblemException) -> Response:
        detail = exc.detail
        if isinstance(detail, list):
            detail = "; ".join(str(item) for item in detail)
        message = clip_echoes(readable_validation_message(str(detail or exc.title or HTTPStatus(exc.status).phrase)))
        return error_response(exc.status, message, dict(exc.headers or {}))

    def handle_http(exc: werkzeug.exceptions.HTTPException) -> Response:
        status = exc.code or 500
        headers: dict[str, str] = {}
        message = exc.description or HTTPStatus(status).phrase
        if isinstance(exc, OAuthScopeProblem):
            needed = " ".join(sorted(exc.required_scopes or ()))
            message = f"The access token lacks the scope this operation needs: {needed}"
            headers["WWW-Authenticate"] = bearer_challenge("insufficient_scope", message, needed)
        elif isinstance(exc, InvalidToken):
            headers["WWW-Authenticate"] = bearer_challenge("invalid_token", message)
        elif isinstance(exc, OAuthProblem):
            if exc.description == "Invalid authorization header":
                message = "The Authorization header must be 'Bearer <access token>'"
                headers["WWW-Authenticate"] = bearer_challenge("invalid_request", message)
            else:
                message = "An access token is required: send 'Authorization: Bearer <access token>'"
                headers["WWW-Authenticate"] = bearer_challenge()
        elif status == 405:
            valid = getattr(exc, "valid_methods", None) or []
            allow = ", ".join(sorted(m for m in valid if m != "HEAD"))
            if allow:
                headers["Allow"] = allow
            message = f"{request.method} is not allowed on {clip(request.path)}"
            if allow:
                message += f"; allowed: {allow}"
        elif status == 404:
            message = f"No resource at {clip(request.path)}"
        elif status == 413:
            message = body_too_large_message(app.config["MAX_CONTENT_LENGTH"])
        return error_response(status, message, headers)

    def handle_redis_down(exc: Exception) -> Response:
        log.warning("redis unavailable", extra={"fields": error_fields(exc)})
        metrics.count("redis_error:rest")
        return error_response(503, "The session store is unavailable; retry shortly", {"Retry-After": "1"})

    def handle_unexpected(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "An unexpected error occurred; it has been logged")

    def handle_redis_reply(exc: redis.ResponseError) -> Response:
        # Refused for now (full, busy, a failed snapshot, too few replicas, a slot moving): a retry later
        # succeeds, so the client is told so, as for an outage. Any other error reply is a bug.
        code = refusal_for_now(exc)
        if code is None:
            return handle_unexpected(exc)
        log.warning("redis refused", extra={"fields": {**error_fields(exc), "refusal": code}})
        metrics.count("redis_error:rest")
        words, retry_after = REFUSAL_WORDS[code]
        return error_response(
            503, f"The session store cannot serve this now: {words}; retry later", {"Retry-After": str(retry_after)}
        )

    for code in werkzeug.exceptions.default_exceptions:
        app.register_error_handler(code, handle_http)
    app.register_error_handler(werkzeug.exceptions.HTTPException, handle_http)
    app.register_error_handler(ProblemException, handle_problem)
    app.register_error_handler(VoraError, handle_vora_error)
    for unavailable in UNAVAILABLE:
        app.register_error_handler(unavailable, handle_redis_down)
    app.register_error_handler(redis.ResponseError, handle_redis_reply)
    app.register_error_handler(Exception, handle_unexpected)
