"""The alert and recording rules pass Debian's promtool: its syntax check and a firing and a quiet case per alert."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from typing import Any

import pytest
import yaml

from tests.harness.prometheus import (
    OPERATIONS,
    RULE_TESTS,
    RULES,
    heading_anchors,
    promtool_binary,
    runbook_anchor,
)

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(promtool_binary() is None, reason="promtool is missing: run `make test-tools`"),
]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    """Return the name of every alert in the rule file."""
    return [rule["alert"] for rule in _rules() if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool with args and return what it did."""
    return subprocess.run([str(promtool_binary()), *args], capture_output=True, text=True, timeout=120, check=False)


def test_rules_pass_promtool_check() -> None:
    """Promtool check rules accepts the rule file with no warning."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_rule_unit_tests_pass_promtool_test() -> None:
    """Promtool test rules passes every unit test of the rules."""
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has at least one evaluation where it fires and one where it does not."""
    cases: dict[str, set[bool]] = defaultdict(set)
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases[case["alertname"]].add(bool(case["exp_alerts"]))
    assert {name: cases[name] for name in alert_names()} == {name: {True, False} for name in alert_names()}


def test_a_broken_expectation_fails_promtool(tmp_path: Any) -> None:
    """Promtool test rules fails when an alert is expected quiet where it fires: the unit tests can fail."""
    tests = yaml.safe_load(RULE_TESTS.read_text())
    [instance_down] = [test for test in tests["tests"] if test["name"] == "instance down"]
    for case in instance_down["alert_rule_test"]:
        case["exp_alerts"] = []
    tests["tests"] = [instance_down]
    tests["rule_files"] = [str(RULES)]
    broken = tmp_path / "broken.test.yaml"
    broken.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(broken))
    assert result.returncode != 0
    assert "VoraInstanceDown" in result.stdout + result.stderr


def test_every_alert_says_what_and_how_bad() -> None:
    """Each alert has a severity of critical or warning, a summary and a description."""
    for rule in _rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_every_alert_names_its_runbook_step() -> None:
    """Each alert's runbook_url names its own heading in docs/operations.md, and that heading exists."""
    anchors = heading_anchors(OPERATIONS.read_text())
    for rule in _rules():
        if "alert" in rule:
            anchor = runbook_anchor(rule["annotations"]["runbook_url"])
            assert anchor == rule["alert"].lower(), rule["alert"]
            assert anchor in anchors, rule["alert"]


def test_a_runbook_url_to_a_missing_heading_is_caught() -> None:
    """The heading check can fail: an anchor docs/operations.md does not have is not among its headings."""
    anchors = heading_anchors(OPERATIONS.read_text())
    assert "voranosuchalert" not in anchors
    assert {"redis-troubleshooting", "draining-an-instance", "push-wake-up-holdupmode"} <= anchors
