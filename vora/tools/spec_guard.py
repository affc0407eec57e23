"""Find the breaking changes of the spec documents since the last release, with api-smart-diff."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vora.events.publisher import ASYNCAPI_FILE
from vora.server_api.rules import SERVER_SPEC_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
GUARDED_DOCUMENTS = ("vora.yaml", SERVER_SPEC_FILE, "vora-webhooks.yaml", ASYNCAPI_FILE)
RELEASED_DIR = "released"  # spec/released/: the baseline while the repository has no release tag
ACKNOWLEDGED_FILE = "breaking-changes.yaml"
DIFF_SCRIPT = REPO_ROOT / "tools" / "spec-diff.mjs"
TOOLS_MODULES = REPO_ROOT / "tools" / "node_modules" / "api-smart-diff"
# api-smart-diff's classes. What it cannot classify is breaking when it takes something away or changes it.
BREAKING = "breaking"
UNCLASSIFIED = "unclassified"
TAKING_ACTIONS = frozenset({"remove", "replace", "rename"})
# Prose that no client acts on: changing it breaks nothing, whatever the tool could not tell.
PROSE_FIELDS = frozenset({"description", "summary", "title", "example", "examples", "externalDocs"})
# Where the server binds a security scheme to its own Python code: no client reads them.
SERVER_BINDINGS = frozenset({"x-tokenInfoFunc", "x-scopeValidateFunc", "x-bearerInfoFunc"})
# api-smart-diff calls a changed operationId an annotation, but generated clients name their methods and types
# after it (the TypeScript SDK's `operations["setup"]`, openapi-generator's `setup()`): renaming one breaks them.
OPERATION_ID = "operationId"
# The document's top-level tag list only describes the groups operations name: inserting a tag there shifts the
# later ones, which api-smart-diff compares by index and reports as replaced.
TAG_LIST = "/tags/"


class GuardError(Exception):
    """The guard could not run: a tool, a baseline or the acknowledgement file is missing or unreadable."""


@dataclass(frozen=True)
class Change:
    """One change of one document as api-smart-diff reports it."""

    document: str
    type: str
    action: str
    path: str
    description: str

    @property
    def breaking(self) -> bool:
        """Tell whether the change can break a client built against the released document."""
        *_, parent, last = ["", *self.path.split("/")]
        # Prose is read by people only, even where api-smart-diff classes its change as breaking (a
        # response's reworded description); a property that happens to be named like it is no prose.
        if (last in PROSE_FIELDS and parent != "properties") or last in SERVER_BINDINGS:
            return False
        if self.path.startswith(TAG_LIST):
            return False  # the document's tag list describes the groups; an operation's own tags are guarded
        if last == OPERATION_ID and parent != "properties":
            return self.action in TAKING_ACTIONS
        if self.type == BREAKING:
            return True
        return self.type == UNCLASSIFIED and self.action in TAKING_ACTIONS

    def line(self) -> str:
        """Describe the change on one line."""
        said = f": {self.description}" if self.description else ""
        return f"{self.document}: {self.type} {self.action} {self.path}{said}"


@dataclass(frozen=True)
class Baseline:
    """Where the released documents come from: a git tag, or the spec/released/ copies."""

    label: str
    tag: str | None
    released_dir: Path

    def read(self, document: str, repo_root: Path, spec_dir: Path) -> str | None:
        """Return a document's released text, or None when it was not released."""
        if self.tag is None:
            path = self.released_dir / document
            return path.read_text() if path.is_file() else None
        try:
            relative = (spec_dir / document).resolve().relative_to(repo_root.resolve())
        except ValueError:
            raise GuardError(f"{spec_dir} is outside {repo_root}: no tag can hold its documents") from None
        shown = subprocess.run(
            ["git", "show", f"{self.tag}:{relative.as_posix()}"],
            cwd=repo_root,
            capture_output=True,
            text=True,
            check=False,
        )
        return shown.stdout if shown.returncode == 0 else None


def last_release_tag(repo_root: Path) -> str | None:
    """Return the nearest tag reachable from HEAD, or None when there is none (or no git)."""
    try:
        described = subprocess.run(
            ["git", "describe", "--tags", "--abbrev=0"], cwd=repo_root, capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return described.stdout.strip() or None if described.returncode == 0 else None


def baseline_of(repo_root: Path, spec_dir: Path) -> Baseline:
    """Choose the last release tag, else the spec/released/ copies."""
    tag = last_release_tag(repo_root)
    released = spec_dir / RELEASED_DIR
    if tag is not None:
        return Baseline(f"tag {tag}", tag, released)
    return Baseline(f"{released} (no release tag)", None, released)


def diff_documents(before: Path, after: Path, document: str) -> list[Change]:
    """Run api-smart-diff (tools/spec-diff.mjs) on two versions of a document and return its changes."""
    try:
        yaml.safe_load(after.read_text())
    except yaml.YAMLError as exc:  # its message names the line and column; api-smart-diff's repeats the document
        raise GuardError(f"{after}: not YAML: {' '.join(str(exc).split())}; `vora check-spec` says more") from None
    node = shutil.which("node")
    if node is None or not TOOLS_MODULES.is_dir():
        raise GuardError("node or tools/node_modules is missing; run `make install`")
    ran = subprocess.run(
        [node, str(DIFF_SCRIPT), str(before), str(after)], capture_output=True, text=True, timeout=120, check=False
    )
    if ran.returncode != 0:
        raise GuardError(f"{document}: api-smart-diff failed: {ran.stderr.strip()[-2000:]}")
    return [
        Change(document, item["type"], item["action"], item["path"], item["description"])
        for item in json.loads(ran.stdout)
    ]


def acknowledged(spec_dir: Path) -> set[tuple[str, str]]:
    """Read the (document, path) pairs of spec/breaking-changes.yaml, each with its reason."""
    path = spec_dir / ACKNOWLEDGED_FILE
    if not path.is_file():
        return set()
    try:
        loaded: Any = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:  # its message names the line and column
        raise GuardError(f"{path}: not YAML: {' '.join(str(exc).split())}") from None
    entries = loaded.get("acknowledged") if isinstance(loaded, dict) else None
    if not isinstance(entries, list | None):
        raise GuardError(f"{path}: acknowledged must be a list of entries")
    entries = entries or []
    pairs = set()
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not all(entry.get(k) for k in ("document", "path", "reason")):
            raise GuardError(f"{path}: entry {number} needs a document, a path and a reason")
        pairs.add((str(entry["document"]), str(entry["path"])))
    return pairs


def acknowledgement_entries(changes: list[Change]) -> str:
    """Write the entries of spec/breaking-changes.yaml that would acknowledge changes, their reasons left to write."""
    entries = [{"document": change.document, "path": change.path, "reason": ""} for change in changes]
    # Indented as the file's own list; the empty reasons are refused until a person says why.
    return textwrap.indent(yaml.safe_dump(entries, sort_keys=False, width=1000), "  ")


@dataclass(frozen=True)
class GuardReport:
    """What the guard found: the baseline, every breaking change, and which of them are acknowledged."""

    baseline: str
    breaking: list[Change]
    acknowledged: list[Change]
    unreleased: list[str]

    @property
    def failed(self) -> bool:
        """Tell whether a breaking change is not acknowledged."""
        return bool(self.breaking)


def check_breaking(
    spec_dir: Path, repo_root: Path = REPO_ROOT, documents: tuple[str, ...] = GUARDED_DOCUMENTS
) -> GuardReport:
    """Compare each document with its released version and sort its breaking changes."""
    baseline = baseline_of(repo_root, spec_dir)
    known = acknowledged(spec_dir)
    breaking: list[Change] = []
    accepted: list[Change] = []
    unreleased: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vora-guard-") as scratch:
        for document in documents:
            released = baseline.read(document, repo_root, spec_dir)
            if released is None:
                unreleased.append(document)
                continue
            before = Path(scratch) / document
            before.write_text(released)
            for change in diff_documents(before, spec_dir / document, document):
                if change.breaking:
                    (accepted if (document, change.path) in known else breaking).append(change)
    return GuardReport(baseline.label, breaking, accepted, unreleased)
