"""Handlers of the Health tag."""

from __future__ import annotations

from collections.abc import Callable

from flask import Response

from vora.core.lifecycle import Lifecycle
from vora.http.errors import empty_response, error_response
from vora.sessions.ownership import DirectoryState
from vora.store.client import REDIS_ERRORS

DIRECTORY_HEADER = "Vora-Directory"


class HealthHandlers:
    """The Health tag's operations: readiness and liveness of this worker."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        redis_problem: Callable[[], str | None],
        directory_state: Callable[[], DirectoryState],
    ) -> None:
        self._lifecycle = lifecycle
        self._redis_problem = redis_problem
        self._directory_state = directory_state

    def readiness(self) -> Response:
        """Answer 204 while Redis answers in time and the worker is not draining, saying what the directory holds."""
        if self._lifecycle.draining:
            return error_response(503, "This instance is draining and takes no new work")
        problem = self._redis_problem()
        if problem is not None:
            return error_response(503, problem)
        try:
            directory = self._directory_state()
        except REDIS_ERRORS as exc:
            return error_response(503, f"Redis does not answer: {type(exc).__name__}")
        # Still ready when the directory is empty or lost: failing readiness would also take the server API,
        # the telephony side's way to restore it, out of its Service.
        response = empty_response(204)
        response.headers[DIRECTORY_HEADER] = directory.value
        return response

    def liveness(self) -> Response:
        """Answer 204 while the worker is healthy and 503 once it is draining."""
        if self._lifecycle.draining:
            return error_response(503, "This worker is draining and will exit")
        return empty_response(204)
