"""Handlers of the Health tag."""

from __future__ import annotations

from flask import Response

from vora.errors import empty_response, error_response
from vora.state import vora_state
from vora.store.client import REDIS_ERRORS

DIRECTORY_HEADER = "Vora-Directory"


def readiness() -> Response:
    """Answer 204 while Redis answers in time and the worker is not draining, saying what the directory holds."""
    state = vora_state()
    if state.lifecycle.draining:
        return error_response(503, "This instance is draining and takes no new work")
    problem = state.probe_redis()
    if problem is not None:
        return error_response(503, problem)
    try:
        directory = state.ownership.status(state.probe).state
    except REDIS_ERRORS as exc:
        return error_response(503, f"Redis does not answer: {type(exc).__name__}")
    # Still ready when the directory is empty or lost: failing readiness would also take the server API,
    # the telephony side's way to restore it, out of its Service.
    response = empty_response(204)
    response.headers[DIRECTORY_HEADER] = directory.value
    return response


def liveness() -> Response:
    """Answer 204 while the worker is healthy and 503 once it is draining."""
    if vora_state().lifecycle.draining:
        return error_response(503, "This worker is draining and will exit")
    return empty_response(204)
