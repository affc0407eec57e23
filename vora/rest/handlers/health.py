"""Handlers of the Health tag."""

from __future__ import annotations

from flask import Response

from vora.http.errors import empty_response, error_response
from vora.services import vora_state


def readiness() -> Response:
    """Answer 204 while Redis answers a PING in time and the worker is not draining."""
    state = vora_state()
    if state.lifecycle.draining:
        return error_response(503, "This instance is draining and takes no new work")
    problem = state.probe_redis()
    if problem is not None:
        return error_response(503, problem)
    return empty_response(204)


def liveness() -> Response:
    """Answer 204 while the worker is healthy and 503 once it is draining."""
    if vora_state().lifecycle.draining:
        return error_response(503, "This worker is draining and will exit")
    return empty_response(204)
