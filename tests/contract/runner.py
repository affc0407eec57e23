"""Run the schemathesis CLI against a running server with every check, and return its report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_schemathesis(
    document: Path,
    base_url: str,
    authorization: str,
    report_dir: Path,
    max_examples: int,
    seed: str,
    workers: int = 2,
    phases: str = "examples,coverage,fuzzing,stateful",
) -> tuple[int, str]:
    """Run every check on positive and negative data in every phase; return the exit code and the printed report."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            str(document),
            "--url",
            base_url,
            "--checks",
            "all",
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
    )
    report = result.stdout + result.stderr
    print(report)
    return result.returncode, report
