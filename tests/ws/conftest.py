"""Fixtures for WebSocket tests: real gunicorn servers, a real client, the AsyncAPI contract."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.vora_server import RunningServer, running_server
from tests.harness.ws_server import ServerFactory


@pytest.fixture(scope="module")
def server(ws_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Serve VORA with one gevent worker for the whole module."""
    with running_server(ws_env, tmp_path_factory.mktemp("ws-server")) as running:
        yield running


@pytest.fixture
def make_server(ws_env: dict[str, str], tmp_path: Path) -> ServerFactory:
    """Start a dedicated server with some settings changed."""

    def start(workers: int = 1, **overrides: str) -> contextlib.AbstractContextManager[RunningServer]:
        env = {**ws_env, **{f"VORA_{k.upper()}": v for k, v in overrides.items()}}
        return running_server(env, tmp_path, workers=workers)

    return start
