"""Tests of `make fuzz` (python -m fuzz): its own loopback VORA, every check, JUnit and a readable summary."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fuzz.__main__ import Outcome, Target, exit_code, named_targets, parse, summary, verdict
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


@pytest.mark.parametrize(
    ("server_url", "server_key", "refusal"),
    [
        ("http://127.0.0.1:2/s", "", "go together"),
        ("", "k" * 43, "go together"),
        ("http://127.0.0.1:2/s", "# VORA server API keys, one a line\n" + "k" * 43, "more than one line"),
    ],
)
def test_a_server_api_half_named_or_a_whole_key_file_is_refused(server_url: str, server_key: str, refusal: str) -> None:
    """A server URL without a key (or the reverse) and a key file's comment line are refused, not skipped or sent."""
    args = parse(["--url", "http://127.0.0.1:1/vora", "--token", "t0k", "--server-url", server_url])
    args.server_key = server_key
    with pytest.raises(SystemExit, match=refusal):
        named_targets(args)


def test_a_named_target_with_a_server_key_fuzzes_both_documents() -> None:
    """A token and a server API key name both documents, each with its own Authorization header."""
    args = parse(["--url", "http://127.0.0.1:1/vora/", "--token", "t0k", "--server-url", "http://127.0.0.1:2/s"])
    args.server_key = "k3y"
    targets = named_targets(args)
    assert [(t.document.name, t.base_url, t.authorization) for t in targets] == [
        ("vora.yaml", "http://127.0.0.1:1/vora", "Bearer t0k"),
        ("vora-server.yaml", "http://127.0.0.1:2/s", "Bearer k3y"),
    ]


@pytest.mark.slow
@pytest.mark.contract
def test_a_document_that_runs_out_of_time_exits_124(tmp_path: Path) -> None:
    """A run stopped by --timeout exits 124 and says so, not 1 and FINDINGS, and keeps what was printed."""
    ran = subprocess.run(
        [sys.executable, "-m", "fuzz", "--timeout", "2", "--seed", "7", "--report-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    assert ran.returncode == 124, ran.stdout[-4000:] + ran.stderr[-2000:]
    (run_dir,) = tmp_path.iterdir()
    text = (run_dir / "summary.md").read_text()
    assert "TIMED OUT" in text
    assert "FINDINGS" not in text
    assert "python -m fuzz exit code: 124 (incomplete)" in text
    assert "stopped after 2 s (--timeout)" in (run_dir / "vora" / "output.txt").read_text()


def outcome(code: int, failures: int = 0, errors: int = 0) -> Outcome:
    """Describe one document's run that ended with code."""
    target = Target("vora", DEFAULT_SPEC_DIR / "vora.yaml", "http://127.0.0.1:1/vora", "Bearer t", "t")
    return Outcome(target, code, 8, failures, errors, 3.0, Path("/tmp/r"))


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ((0, 0), 0),
        ((0, 1), 1),
        ((124, 0), 124),
        ((124, 1), 1),
        ((2, 124), 2),
        ((2, 0), 2),
        ((1, 2), 1),
    ],
)
def test_the_exit_code_says_findings_first_then_not_run_then_out_of_time(codes: tuple[int, int], expected: int) -> None:
    """Findings (1) outrank a document schemathesis could not run (2), which outranks a timeout (124)."""
    assert exit_code([outcome(code) for code in codes]) == expected


def test_the_verdict_tells_findings_from_errors_and_timeouts() -> None:
    """Failed checks are FINDINGS; requests that could not be made are ERRORS; a timeout is TIMED OUT."""
    assert verdict(outcome(0)) == "clean"
    assert verdict(outcome(1, failures=1)) == "FINDINGS (exit 1)"
    assert verdict(outcome(1, errors=3)).startswith("ERRORS (exit 1)")
    assert verdict(outcome(124)).startswith("TIMED OUT after 3 s (exit 124)")
    assert verdict(outcome(2)).startswith("NOT RUN (schemathesis exit 2)")


def test_the_summary_names_the_data_and_the_command_that_replays_the_run() -> None:
    """The summary says which data was generated and gives every option that shapes the requests, not only the seed."""
    args = parse(["--seed", "42", "--mode", "positive", "--max-examples", "300", "--workers", "1"])
    text = summary([outcome(0)], args)
    assert "positive data," in text
    assert "positive and negative" not in text
    assert (
        'make fuzz FUZZ_ARGS="--seed 42 --mode positive --max-examples 300 '
        '--phases examples,coverage,fuzzing,stateful --workers 1"'
    ) in text
    named = parse(["--url", "http://127.0.0.1:1/vora", "--token", "secret-token", "--seed", "42"])
    assert 'FUZZ_ARGS="--url http://127.0.0.1:1/vora --seed 42' in summary([outcome(0)], named)
    assert "secret-token" not in summary([outcome(0)], named)
