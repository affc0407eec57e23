"""Handlers of the Health tag."""

from __future__ import annotations

from collections.abc import Callable

from flask import Response

from vora.core.lifecycle import Lifecycle
from vora.http.errors import empty_response, error_response


class HealthHandlers:
    """The Health tag's operations: readiness and liveness of this worker."""

    def __init__(self, lifecycle: Lifecycle, redis_problem: Callable[[], str | None]) -> None:
        self._lifecycle = lifecycle
        self._redis_problem = redis_problem

    def readiness(self) -> Response:
        """Answer 204 while Redis answers a PING in time and the worker is not draining."""
        if self._lifecycle.draining:
            return error_response(503, "This instance is draining and takes no new work")
        problem = self._redis_problem()
        if problem is not None:
            return error_response(503, problem)
        return empty_response(204)

    def liveness(self) -> Response:
        """Answer 204 while the worker is healthy and 503 once it is draining."""
        if self._lifecycle.draining:
            return error_response(503, "This worker is draining and will exit")
        return empty_response(204)
