"""The Grafana dashboard is what deploy/observability/dashboard.py generates, laid out and wired soundly."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from types import ModuleType
from typing import Any

import yaml
from prometheus_client import REGISTRY

from tests.harness.prometheus import DASHBOARD, OBSERVABILITY, RULES

DOCS = OBSERVABILITY.parents[1] / "docs" / "metrics.md"
GRID_WIDTH = 24


def generator() -> ModuleType:
    """Import deploy/observability/dashboard.py, which is no package."""
    spec = importlib.util.spec_from_file_location("vora_dashboard", OBSERVABILITY / "dashboard.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    """Return the committed dashboard JSON."""
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def targets(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every query of every panel."""
    return [target for panel in board["panels"] for target in panel.get("targets", [])]


def test_committed_json_is_what_the_generator_writes() -> None:
    """The JSON in the repository is exactly the generator's output: edit dashboard.py, then run it."""
    assert DASHBOARD.read_text() == generator().render()


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    """Every panel has its own id and a grid cell no other panel covers."""
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    covered: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= GRID_WIDTH
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & covered, panel["title"]
        covered |= cells


def test_every_query_uses_the_chosen_data_source_and_instances() -> None:
    """Each query names the dashboard's data source variable and selects job vora and the chosen instances."""
    board = dashboard()
    assert [variable["name"] for variable in board["templating"]["list"]] == ["datasource", "instance"]
    for target in targets(board):
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        selectors = re.findall(r"\w+\{([^}]*)\}", target["expr"])
        assert selectors, target["expr"]
        assert all('job="vora", instance=~"$instance"' in selector for selector in selectors), target["expr"]


def test_every_panel_explains_itself() -> None:
    """Each chart has a description and a unit, and every query a legend."""
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["description"], panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert all(target["legendFormat"] for target in panel["targets"]), panel["title"]


def metric_names(expr: str) -> set[str]:
    """Return the metric names a PromQL expression reads (VORA's and Prometheus' own)."""
    return set(re.findall(r"\b((?:vora|process)_[a-z_]+|up)\{", expr))


def documented_metrics() -> set[str]:
    """Return the metric names docs/metrics.md's table lists."""
    return set(re.findall(r"^\| `([a-z_]+)`", DOCS.read_text(), re.M))


def test_every_metric_the_dashboard_and_rules_read_is_documented() -> None:
    """Each metric a panel or rule reads has its row in docs/metrics.md (histograms under their base name)."""
    exprs = [target["expr"] for target in targets(dashboard())]
    exprs += [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    read = set().union(*(metric_names(expr) for expr in exprs))
    base = {re.sub(r"_(bucket|sum|count)$", "", name) for name in read}
    assert base - documented_metrics() == set()


def test_every_vora_metric_is_documented() -> None:
    """Each metric family vora.observability.metrics defines has its row in docs/metrics.md."""
    import vora.observability.metrics  # noqa: F401, PLC0415 - defines the families in the default registry

    # A counter's family is named without its _total suffix.
    families = {metric.name for metric in REGISTRY.collect() if metric.name.startswith("vora_")}
    documented = documented_metrics()
    assert {name for name in families if name not in documented and name + "_total" not in documented} == set()


def test_committed_prometheus_rule_is_what_the_generator_writes() -> None:
    """The PrometheusRule manifest carries exactly the rule file's groups: regenerate it after editing the rules."""
    manifest = OBSERVABILITY / "kubernetes" / "prometheusrule.yaml"
    assert manifest.read_text() == generator().render_prometheus_rule()
    assert yaml.safe_load(manifest.read_text())["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
