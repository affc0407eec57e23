"""A real Prometheus (Debian's) on loopback, scraping given targets every second, and its HTTP API."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from testbed.ports import HOST, free_port
from testbed.procs import ManagedProcess
from testbed.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "deploy" / "observability"
RULES = OBSERVABILITY / "prometheus" / "vora-rules.yaml"
RULE_TESTS = OBSERVABILITY / "prometheus" / "vora-rules.test.yaml"
DASHBOARD = OBSERVABILITY / "grafana" / "vora-dashboard.json"
OPERATIONS = REPO / "docs" / "operations.md"  # the runbook every alert's runbook_url points into
SCRAPE_SECONDS = 1
READY_TIMEOUT = 30.0
JOB = "vora"  # the job name the rules and the dashboard select


def prometheus_binary() -> str | None:
    """Return the prometheus server's path, None when it is not installed."""
    return shutil.which("prometheus")


def promtool_binary() -> str | None:
    """Return promtool's path, None when it is not installed."""
    return shutil.which("promtool")


def heading_anchors(markdown: str) -> set[str]:
    """Return the anchors GitHub gives a Markdown document's headings: lower case, no punctuation, - for spaces."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


def runbook_anchor(url: str) -> str:
    """Return the anchor in docs/operations.md a runbook_url names, failing when it names another document."""
    document, _, anchor = url.partition("#")
    assert document == "docs/operations.md", url
    return anchor


@dataclass
class RunningPrometheus:
    """A Prometheus server and its API's base URL."""

    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        """Return the server's base URL."""
        return f"http://{HOST}:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        """Call GET /api/v1/<path> and return its data, raising on an error status."""
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate an instant query now and return its series."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [data]
        return result

    def targets_up(self) -> bool:
        """Tell whether every scrape target has been scraped and is up."""
        active = self.api("targets", state="active")["activeTargets"]
        return bool(active) and all(target["health"] == "up" for target in active)

    def alerts(self) -> list[dict[str, Any]]:
        """Return the alerts pending or firing now, with their labels, annotations and state."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rule_groups(self) -> list[dict[str, Any]]:
        """Return the loaded rule groups with their rules' state."""
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups


def write_config(directory: Path, targets: Sequence[str], rules: Path) -> Path:
    """Write a prometheus.yml scraping targets as job "vora" every second, with the rule file loaded."""
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": list(targets)}]}],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def running_prometheus(directory: Path, targets: Sequence[str], rules: Path = RULES) -> Iterator[RunningPrometheus]:
    """Run Prometheus on a loopback port with its data in directory until the block ends; yield it once ready."""
    binary = prometheus_binary()
    if binary is None:
        raise RuntimeError("prometheus is not installed: run `make test-tools`")
    port = free_port()
    config = write_config(directory, targets, rules)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={HOST}:{port}",
        "--log.level=warn",
    ]
    process = ManagedProcess(argv, cwd=directory, log_path=directory / "prometheus.log", name="prometheus")
    process.start()
    server = RunningPrometheus(process, port)
    try:
        wait_for(
            lambda: requests.get(f"{server.url}/-/ready", timeout=2).status_code == 200,
            READY_TIMEOUT,
            what="Prometheus to be ready",
            abort=process.exit_reason,
        )
        yield server
    finally:
        process.stop()
