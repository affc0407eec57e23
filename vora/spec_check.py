"""Check the spec documents: valid, and naming the same events as the code."""

from __future__ import annotations

from pathlib import Path

import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from vora.catalog import SUBSCRIBABLE_EVENTS


def check_openapi(spec_dir: Path) -> list[str]:
    """Validate spec/vora.yaml and compare its EventType enum with the catalogue."""
    path = spec_dir / "vora.yaml"
    problems: list[str] = []
    spec, _ = read_from_filename(str(path))
    try:
        validate(spec)
    except Exception as exc:  # noqa: BLE001 - any validator failure is the report
        problems.append(f"{path}: {exc}")
    enum = yaml.safe_load(path.read_text())["components"]["schemas"]["EventType"]["enum"]
    if list(enum) != list(SUBSCRIBABLE_EVENTS):
        problems.append(f"{path}: EventType enum {enum} differs from vora.catalog {list(SUBSCRIBABLE_EVENTS)}")
    return problems


def check_all(spec_dir: Path) -> list[str]:
    """Run every spec check and return the problems found."""
    return check_openapi(spec_dir)
