"""Route each request to its app: by the listener it arrived on (public or server API), or by its path."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from vora.core.types import WsgiApp


def listener_port(environ: dict[str, Any]) -> int | None:
    """Return the local port of the listener the request arrived on (gunicorn's socket, not the Host header)."""
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        try:
            address = sock.getsockname()
        except OSError:
            return None
        return address[1] if isinstance(address, tuple) else None
    port = environ.get("SERVER_PORT", "")
    return int(port) if str(port).isdigit() else None


class ListenerDispatcher:
    """Send what arrives on the server API's listener to the server API app, the rest to the public app."""

    def __init__(self, public: WsgiApp, server: WsgiApp, server_port: int) -> None:
        self._public = public
        self._server = server
        self._server_port = server_port

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Serve one request with the app of the listener it came in on."""
        if listener_port(environ) == self._server_port:
            return self._server(environ, start_response)
        return self._public(environ, start_response)


class PathDispatcher:
    """Send the requests for one path and everything under it to their own app, the rest to the main app."""

    def __init__(self, main: WsgiApp, prefix: str, inner: WsgiApp) -> None:
        self._main = main
        self._prefix = prefix.rstrip("/")
        self._under = self._prefix + "/"
        self._inner = inner

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Serve one request with the app of its path."""
        path = environ.get("PATH_INFO", "")
        if path == self._prefix or path.startswith(self._under):
            return self._inner(environ, start_response)
        return self._main(environ, start_response)
