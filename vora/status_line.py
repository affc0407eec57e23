"""Write status lines with RFC 9110's reason phrases ("400 Bad Request"), not Werkzeug's upper case."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from vora.bodies import WsgiApp

STATUS_LINES = {int(status): f"{int(status)} {status.phrase}" for status in HTTPStatus}


def standard_status_line(status: str) -> str:
    """Return a WSGI status with the standard reason phrase of its code (unchanged for a code HTTPStatus lacks)."""
    code = status[:3]
    return STATUS_LINES.get(int(code), status) if code.isdigit() else status


class StandardReasonPhrases:
    """Rewrite the reason phrase of every response an app starts."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Serve a request, handing the server its status with the standard phrase."""

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(standard_status_line(status), headers, exc_info)

        return self.app(environ, start)
