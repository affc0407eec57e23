"""Tests of `make fuzz` (python -m fuzz): its own loopback VORA, every check, JUnit and a readable summary."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fuzz.__main__ import named_targets, parse
from vora.core.settings import DEFAULT_SPEC_DIR

REPO = DEFAULT_SPEC_DIR.parent


@pytest.mark.slow
@pytest.mark.contract
def test_make_fuzz_fuzzes_a_vora_it_starts(tmp_path: Path) -> None:
    """Without a URL it starts Redis and VORA, fuzzes both documents statefully too, and reports each."""
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz",
            "--max-examples",
            "10",
            "--phases",
            "examples,stateful",
            "--seed",
            "7",
            *("--report-dir", str(tmp_path), "--timeout", "240"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
    )
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    (run_dir,) = tmp_path.iterdir()
    text = (run_dir / "summary.md").read_text()
    assert "| vora.yaml | http://127.0.0.1:" in text
    assert "| vora-server.yaml | http://127.0.0.1:" in text
    assert "FINDINGS" not in text
    for name in ("vora", "vora-server"):
        root = ET.parse(run_dir / name / "junit.xml").getroot()  # noqa: S314 - written by schemathesis just now
        assert sum(int(suite.get("tests", 0)) for suite in root.iter("testsuite")) > 0
        output = (run_dir / name / "output.txt").read_text()
        assert "Stateful" in output
        assert "Bearer ey" not in output  # the token is redacted from what is printed and kept
    assert "/ 4 selected / 4 total" in (run_dir / "vora" / "output.txt").read_text()


@pytest.mark.slow
@pytest.mark.contract
def test_stateful_phase_follows_every_link(tmp_path: Path) -> None:
    """On valid data, one worker and ten scenarios, the stateful phase follows all four links of vora.yaml."""
    # With invalid data too (--mode all) most link steps mutate the identity and rightly get 404, so
    # whether the events -> logout link is reached depends on the draw; valid data reaches it every time.
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz",
            *("--max-examples", "10", "--phases", "stateful", "--mode", "positive", "--workers", "1"),
            *("--seed", "7", "--report-dir", str(tmp_path), "--timeout", "240"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
    )
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    (run_dir,) = tmp_path.iterdir()
    assert "4 covered / 4 selected / 4 total" in (run_dir / "vora" / "output.txt").read_text()


def test_a_named_target_needs_credentials() -> None:
    """A URL without a token or client credentials is refused with the options to give."""
    with pytest.raises(SystemExit, match="--token"):
        named_targets(parse(["--url", "http://127.0.0.1:1/vora", "--token", ""]))


def test_a_named_target_with_a_server_key_fuzzes_both_documents() -> None:
    """A token and a server API key name both documents, each with its own Authorization header."""
    args = parse(["--url", "http://127.0.0.1:1/vora/", "--token", "t0k", "--server-url", "http://127.0.0.1:2/s"])
    args.server_key = "k3y"
    targets = named_targets(args)
    assert [(t.document.name, t.base_url, t.authorization) for t in targets] == [
        ("vora.yaml", "http://127.0.0.1:1/vora", "Bearer t0k"),
        ("vora-server.yaml", "http://127.0.0.1:2/s", "Bearer k3y"),
    ]
