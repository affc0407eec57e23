"""Types every layer shares."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# A WSGI application: the app, a middleware around it, or the dispatcher between two apps.
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
