"""The alert rules (helm/lynx-relay/files/alerts.yaml): valid for promtool, unit-tested with
promtool's rule tests (alerts_test.yaml), and every alert documented in docs/runbook.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from dashboards.promql import ALERTS, alert_rules, load_alerts
from tests.conftest import ROOT
from tests.observability.conftest import HERE, promtool

RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = re.compile(r"^RUNBOOK_BASE_URL/docs/runbook\.md#([a-z0-9-]+)$")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces
    to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """Section text by anchor, for the runbook's second-level headings."""
    text = RUNBOOK.read_text(encoding="utf-8")
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {github_anchor(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def alerting_rules() -> list[Any]:
    return [rule for rule in alert_rules(load_alerts()) if "alert" in rule]


def test_promtool_accepts_the_rule_file(prometheus_bin: Path) -> None:
    """`promtool check rules` finds the file valid (syntax, PromQL, templates)."""
    checked = promtool(prometheus_bin, "check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_promtool_rule_unit_tests_pass(prometheus_bin: Path) -> None:
    """Every case of alerts_test.yaml passes: each alert fires on its symptom (with the
    expected labels and rendered annotations) and stays quiet on look-alikes."""
    tested = promtool(prometheus_bin, "test", "rules", "alerts_test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """alerts_test.yaml has, for every alert in the rule file, at least one evaluation where
    it fires and one where it must not."""
    cases = yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a quiet case"


def test_every_alert_is_documented_and_has_a_severity() -> None:
    """Each alert carries a summary, a description, a severity of critical or warning, and a
    runbook_url that points (through the chart's RUNBOOK_BASE_URL) at an existing runbook
    section."""
    sections = runbook_sections()
    for rule in alerting_rules():
        name = rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), name
        assert annotations.get("description"), name
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, name
        url = RUNBOOK_URL.match(annotations.get("runbook_url", ""))
        assert url, f"{name}: runbook_url must be RUNBOOK_BASE_URL/docs/runbook.md#<anchor>"
        assert url.group(1) in sections, f"{name}: no section #{url.group(1)} in {RUNBOOK}"


def test_runbook_sections_say_what_it_means_how_to_check_and_what_to_do() -> None:
    """The runbook section of every alert explains the alert, how to check it and what to do."""
    sections = runbook_sections()
    for name in {rule["alert"] for rule in alerting_rules()}:
        body = sections[github_anchor(name)]
        for part in ("What it means", "How to check", "What to do"):
            assert f"**{part}.**" in body, f"{name}: its runbook section lacks {part!r}"
