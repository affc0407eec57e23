"""Run the schemathesis CLI against a running server with every check, and return its report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Loaded by schemathesis itself (SCHEMATHESIS_HOOKS): drops the false findings it makes (docs/qa.md).
HOOKS_FILE = Path(__file__).resolve().parents[2] / "testbed" / "schemathesis_hooks.py"


def run_schemathesis(
    document: Path,
    base_url: str,
    authorization: str,
    report_dir: Path,
    max_examples: int,
    seed: str,
    workers: int = 2,
    phases: str = "examples,coverage,fuzzing,stateful",
    exclude_checks: tuple[str, ...] = (),
) -> tuple[int, str]:
    """Run every check (but those excluded) on positive and negative data in every phase; return code and report."""
    excluded = ["--exclude-checks", ",".join(exclude_checks)] if exclude_checks else []
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            str(document),
            "--url",
            base_url,
            "--checks",
            "all",
            *excluded,
            "--mode",
            "all",
            "--phases",
            phases,
            "--header",
            f"Authorization: {authorization}",
            "--max-examples",
            str(max_examples),
            "--generation-database",
            "none",
            "--seed",
            seed,
            "--workers",
            str(workers),
            "--max-response-time",
            "5",
            "--request-timeout",
            "5",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(report_dir),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        cwd=report_dir,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS_FILE)},
    )
    report = result.stdout + result.stderr
    print(report)
    return result.returncode, report
