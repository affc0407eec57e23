"""Tests of the spec tools `make test` runs: Spectral's lint and the Widdershins renders in docs/api/."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vora.core.settings import DEFAULT_SPEC_DIR

REPO = DEFAULT_SPEC_DIR.parent
TOOLS_BIN = REPO / "tools" / "node_modules" / ".bin"
RULESET = REPO / ".spectral.yaml"
LINTED = ("vora.yaml", "vora-server.yaml", "vora-console.yaml", "vora-webhooks.yaml", "vora-events.asyncapi.yaml")
RENDERED = ("vora", "vora-server")


def _tool(name: str) -> str:
    path = TOOLS_BIN / name
    assert path.is_file(), f"{path} is missing: `make install` installs tools/package-lock.json"
    return str(path)


def spectral(report: Path, *documents: Path) -> tuple[int, list[dict[str, object]]]:
    """Lint documents with the repository's ruleset; return Spectral's exit code and its findings."""
    ran = subprocess.run(
        [_tool("spectral"), "lint", "--fail-severity=warn", "-r", str(RULESET), "-f", "json", "-o", str(report)]
        + [str(document) for document in documents],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=REPO,
    )
    assert report.is_file(), ran.stdout + ran.stderr
    findings: list[dict[str, object]] = json.loads(report.read_text())
    return ran.returncode, findings


def test_spectral_finds_nothing_in_the_spec_documents(tmp_path: Path) -> None:
    """Both OpenAPI documents, the webhooks and the AsyncAPI document pass .spectral.yaml with no warning."""
    code, findings = spectral(tmp_path / "report.json", *(Path("spec") / name for name in LINTED))
    assert findings == []
    assert code == 0


def test_spectral_reports_a_real_problem(tmp_path: Path) -> None:
    """A copy of vora.yaml with an operation lacking its operationId and a broken $ref fails the lint, named."""
    document = yaml.safe_load((DEFAULT_SPEC_DIR / "vora.yaml").read_text())
    del document["paths"]["/health/liveness"]["get"]["operationId"]
    document["paths"]["/health/readiness"]["get"]["responses"]["503"] = {"$ref": "#/components/responses/Nowhere"}
    broken = tmp_path / "vora.yaml"
    broken.write_text(yaml.safe_dump(document, sort_keys=False))
    code, findings = spectral(tmp_path / "report.json", broken)
    assert code != 0
    codes = {finding["code"] for finding in findings}
    assert {"operation-operationId", "invalid-ref"} <= codes, codes


@pytest.mark.parametrize("document", RENDERED)
def test_the_rendered_api_docs_are_fresh(tmp_path: Path, document: str) -> None:
    """docs/api/ holds exactly what `make docs` renders from today's spec (run `make docs` after editing the spec)."""
    shutil.which("node") or pytest.fail("node is missing: `make install` installs npm and node")
    _tool("widdershins")
    subprocess.run(["bash", str(REPO / "scripts" / "render-api-docs.sh"), str(tmp_path)], check=True, timeout=180)
    committed = REPO / "docs" / "api" / f"{document}.md"
    rendered = (tmp_path / f"{document}.md").read_text()
    assert committed.is_file(), f"{committed} is missing: run `make docs`"
    fresh = committed.read_text() == rendered  # compared whole, not diffed: the render is thousands of lines
    assert fresh, f"{committed} is stale: run `make docs` and commit docs/api/"


def test_the_render_is_like_the_seed() -> None:
    """The render is Widdershins 4.0.1's, without front matter, with the seed's sections and code samples."""
    rendered = (REPO / "docs" / "api" / "vora.md").read_text()
    assert rendered.startswith("<!-- Generator: Widdershins v4.0.1 -->\n")
    for heading in (
        '<h1 id="vora-rest-api-session">Session</h1>',
        "## logout",
        '<h3 id="setup-responses">',
        "# Schemas",
    ):
        assert heading in rendered
    for language in ("shell", "http", "javascript", "ruby", "python", "php", "java", "go"):
        assert f"```{language}\n" in rendered


def test_make_docs_regenerates_everything_the_spec_generates() -> None:
    """`make docs`, the one command the guide names after a spec edit, renders docs/api/ and the SDK's types."""
    planned = subprocess.run(
        ["make", "-n", "docs"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "scripts/render-api-docs.sh docs/api" in planned
    assert "--prefix clients/typescript generate" in planned
