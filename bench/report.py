"""The result table, the machine description and bench/results/latest.json."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil


@dataclass
class Row:
    """One line of the table: a figure, its same-run baseline, their ratio and the target."""

    scenario: str
    measured: float | None
    unit: str
    baseline: float | None
    target: str
    met: bool | None
    ratio: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.measured is not None and self.baseline:
            self.ratio = round(self.measured / self.baseline, 3)


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def _met(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "—"}[value]


def table_lines(rows: list[Row], markdown: bool = False) -> list[str]:
    """Render the rows as an aligned text table, or as a Markdown table."""
    header = ["scenario", "measured", "baseline", "ratio", "target", "met?"]
    cells = [
        [
            r.scenario,
            _number(r.measured, r.unit),
            _number(r.baseline, r.unit),
            "—" if r.ratio is None else f"{r.ratio:.2f}",
            r.target,
            _met(r.met),
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(c) + " |" for c in cells]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    render = [" | ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in [header, *cells]]
    return [render[0], "-+-".join("-" * w for w in widths), *render[1:]]


def note_lines(rows: list[Row]) -> list[str]:
    """Return one Markdown list item per row whose note says what its cells cannot (errors, a lagging publisher)."""
    return [f"- {row.scenario}: {row.note}" for row in rows if row.note and row.note not in row.scenario]


def _command_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return ""
    return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def source_state(root: Path) -> dict[str, Any]:
    """Name the commit measured and whether the work tree differed from it."""
    commit = _command_line(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    status = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", "vora", "spec", "pyproject.toml"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    return {"commit": commit, "vora_modified": bool(status.strip())}


def machine_info(redis_version: str, wrk: str | None) -> dict[str, Any]:
    """Describe the machine and the software the figures come from."""
    memory = psutil.virtual_memory()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(memory.total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version,
        "load_generator": " ".join(_command_line([wrk, "--version"]).split()[:2])
        if wrk
        else "python asyncio fallback (bench/httpload.py)",
        "somaxconn": _read("/proc/sys/net/core/somaxconn"),
        "ip_local_port_range": _read("/proc/sys/net/ipv4/ip_local_port_range"),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def write_results(
    path: Path, machine: dict[str, Any], scenarios: dict[str, Any], rows: list[Row], extra: dict[str, Any]
) -> None:
    """Write every figure, the machine and the table to a JSON file."""
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": machine,
        **extra,
        "table": [asdict(r) for r in rows],
        "scenarios": scenarios,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
