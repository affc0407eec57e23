"""The types of the topology fixtures: environments and socket clients."""

from __future__ import annotations

from collections.abc import Callable

from tests.harness.ws_client import Client

EnvFactory = Callable[..., dict[str, str]]


Sockets = Callable[..., Client]
