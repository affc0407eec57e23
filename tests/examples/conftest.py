"""Fixtures for the examples' journeys: which language runs, and a VORA serving the server API."""

from __future__ import annotations

import pytest

from tests.harness.examples import LANGUAGES, require_runtime
from tests.harness.server_api import SERVER_KEY


@pytest.fixture(params=LANGUAGES)
def language(request: pytest.FixtureRequest) -> str:
    """Run the test once per language the examples are written in (skipped when its runtime is missing)."""
    language: str = request.param
    require_runtime(language)
    return language


@pytest.fixture(scope="module")
def api_env(ws_env: dict[str, str]) -> dict[str, str]:
    """Return the VORA_* variables of a server with a server API key."""
    return {**ws_env, "VORA_SERVER_API_KEYS": SERVER_KEY}
