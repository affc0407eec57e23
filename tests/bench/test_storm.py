"""Tests of the reconnect storm's choice of load generator."""

from __future__ import annotations

import pytest

from bench.scenarios.storm import load_generator


@pytest.mark.parametrize("engine", ["python", "node"])
def test_the_environment_chooses_the_engine(monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    """BENCH_STORM_LOAD names the engine the storm's sockets are opened by."""
    monkeypatch.setenv("BENCH_STORM_LOAD", engine)
    assert load_generator() == engine


def test_an_unknown_engine_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A BENCH_STORM_LOAD that names neither engine stops the scenario with the two it could be."""
    monkeypatch.setenv("BENCH_STORM_LOAD", "rust")
    with pytest.raises(RuntimeError, match="must be python or node, not 'rust'"):
        load_generator()
