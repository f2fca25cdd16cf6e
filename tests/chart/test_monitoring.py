"""Monitoring: ServiceMonitor, PrometheusRule and the Grafana dashboard ConfigMap.

The PrometheusRule's spec.groups are the `groups` of files/alerts.yaml (a plain Prometheus rule
file), embedded verbatim so the alerts' own {{ $labels }} templates survive, with the
RUNBOOK_BASE_URL placeholder replaced. The dashboard ConfigMap carries files/dashboard.json and
the label Grafana's sidecar looks for. The mechanics are tested on a copy of the chart with
small stand-in files; the assertions on the real files skip only while those files are absent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart import chartlib
from tests.chart.chartlib import (
    ALERTS_FILE,
    DASHBOARD_FILE,
    FULLNAME,
    NAMESPACE,
    RUNBOOK_BASE_URL,
    SCENARIOS,
    Manifest,
    copy_chart,
    find,
    monitoring_values,
    of_kind,
    render,
)

STAND_IN_ALERTS = """\
# A stand-in rule file for the chart's mechanics.
groups:
  - name: stand-in
    rules:
      - alert: StandInDown
        expr: up{job="lynx-relay"} == 0
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.instance }} is down"
          runbook_url: RUNBOOK_BASE_URL/docs/runbook.md#standindown
"""
STAND_IN_DASHBOARD = json.dumps({"uid": "stand-in", "title": "stand-in", "panels": []})

requires_monitoring_files = pytest.mark.skipif(
    not chartlib.monitoring_files_present(),
    reason="helm/lynx-relay/files/alerts.yaml or dashboard.json not written yet",
)


@pytest.fixture(scope="module")
def stand_in_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart whose files/ holds the stand-ins instead of the real files."""
    return copy_chart(
        tmp_path_factory.mktemp("chart"),
        {"files/alerts.yaml": STAND_IN_ALERTS, "files/dashboard.json": STAND_IN_DASHBOARD},
    )


def test_nothing_monitoring_by_default() -> None:
    """Without the toggles, none of the three objects is rendered (their CRDs may be absent)."""
    objects = render()
    assert of_kind(objects, "ServiceMonitor") == of_kind(objects, "PrometheusRule") == []
    assert [o["metadata"]["name"] for o in of_kind(objects, "ConfigMap")] == [FULLNAME]


def test_service_monitor_scrapes_the_service_as_job_lynx_relay() -> None:
    """The ServiceMonitor selects the relay's Service in the release namespace and scrapes
    /metrics on port http; the job is named by the Service's scrape-job label, lynx-relay,
    which the alerts and the dashboard select on."""
    objects = render(SCENARIOS["service-monitor"])
    monitor = find(objects, "ServiceMonitor")
    service = find(objects, "Service")
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "30s")
    assert endpoint["scrapeTimeout"] == "10s"
    assert service["metadata"]["labels"][spec["jobLabel"]] == "lynx-relay"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_service_monitor_in_another_namespace_still_selects_the_release_namespace() -> None:
    """A ServiceMonitor placed in the monitoring namespace still finds the relay's Service."""
    monitor = find(render(SCENARIOS["everything"]), "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_prometheus_rule_embeds_the_rule_file_groups(stand_in_chart: Path) -> None:
    """spec.groups is the rule file's `groups`, its Prometheus templates untouched and the
    runbook placeholder replaced."""
    rule = find(render(monitoring_values(), stand_in_chart), "PrometheusRule")
    expected = yaml.safe_load(STAND_IN_ALERTS.replace("RUNBOOK_BASE_URL", RUNBOOK_BASE_URL))
    assert rule["spec"]["groups"] == expected["groups"]
    annotations = rule["spec"]["groups"][0]["rules"][0]["annotations"]
    assert annotations["summary"] == "{{ $labels.instance }} is down"
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE_URL}/docs/runbook.md#standindown"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_needs_a_runbook_base_url(stand_in_chart: Path) -> None:
    """Without runbookBaseUrl the alerts would link to a placeholder: refused."""
    values = chartlib.merge(
        monitoring_values(), {"metrics": {"prometheusRule": {"runbookBaseUrl": ""}}}
    )
    with pytest.raises(helm.HelmRenderError, match="runbookBaseUrl"):
        render(values, stand_in_chart)


def test_dashboard_config_map_is_labelled_for_the_grafana_sidecar(stand_in_chart: Path) -> None:
    """The ConfigMap holds the dashboard JSON under a .json key, labelled grafana_dashboard: "1"
    by default; label, value, namespace and annotations are configurable."""
    objects = render(monitoring_values(), stand_in_chart)
    config_map = find(objects, "ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["lynx-relay.json"]) == json.loads(STAND_IN_DASHBOARD)

    custom = chartlib.merge(
        monitoring_values(),
        {
            "metrics": {
                "dashboard": {
                    "sidecarLabel": "grafana.com/dashboard",
                    "sidecarLabelValue": "lynx",
                    "namespace": "grafana",
                    "annotations": {"grafana_folder": "Video"},
                }
            }
        },
    )
    config_map = find(render(custom, stand_in_chart), "ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana.com/dashboard"] == "lynx"
    assert "grafana_dashboard" not in config_map["metadata"]["labels"]
    assert config_map["metadata"]["namespace"] == "grafana"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Video"}


@pytest.mark.parametrize(
    ("toggle", "missing"),
    [("prometheusRule", "files/alerts.yaml"), ("dashboard", "files/dashboard.json")],
)
def test_missing_monitoring_files_fail_clearly(tmp_path: Path, toggle: str, missing: str) -> None:
    """Turning on an object whose file is missing fails the render, naming the file."""
    chart = copy_chart(tmp_path, {"files/alerts.yaml": "", "files/dashboard.json": ""})
    values = chartlib.merge(
        monitoring_values(),
        {"metrics": {"prometheusRule": {"enabled": toggle == "prometheusRule"}}},
    )
    values["metrics"]["dashboard"]["enabled"] = toggle == "dashboard"
    with pytest.raises(helm.HelmRenderError, match=missing):
        render(values, chart)


def _real_monitoring() -> list[Manifest]:
    return render(monitoring_values())


@requires_monitoring_files
def test_real_alerts_become_the_prometheus_rule() -> None:
    """files/alerts.yaml is a rule file with `groups`, and they are exactly the
    PrometheusRule's spec.groups, with every runbook_url under runbookBaseUrl."""
    text = ALERTS_FILE.read_text(encoding="utf-8")
    source: dict[str, Any] = yaml.safe_load(text.replace("RUNBOOK_BASE_URL", RUNBOOK_BASE_URL))
    assert source["groups"]
    rule = find(_real_monitoring(), "PrometheusRule")
    assert rule["spec"]["groups"] == source["groups"]
    rendered = json.dumps(rule)
    assert "RUNBOOK_BASE_URL" not in rendered
    for group in rule["spec"]["groups"]:
        for entry in group["rules"]:
            url = entry.get("annotations", {}).get("runbook_url")
            assert url is None or url.startswith(f"{RUNBOOK_BASE_URL}/"), url


@requires_monitoring_files
def test_real_alerts_select_the_job_the_service_monitor_names() -> None:
    """Alerts that pin a job select the job name the ServiceMonitor gives the relay."""
    objects = _real_monitoring()
    job = find(objects, "Service")["metadata"]["labels"]["lynx-relay/scrape-job"]
    exprs = [
        str(entry["expr"])
        for group in find(objects, "PrometheusRule")["spec"]["groups"]
        for entry in group["rules"]
    ]
    pinned = {name for expr in exprs for name in re.findall(r'job="([^"]*)"', expr)}
    assert pinned == {job}


@requires_monitoring_files
def test_real_dashboard_is_shipped_verbatim() -> None:
    """files/dashboard.json is valid JSON, fits in a ConfigMap (1 MiB), and is what the
    ConfigMap carries."""
    text = DASHBOARD_FILE.read_text(encoding="utf-8")
    dashboard = json.loads(text)
    assert dashboard["title"]
    assert dashboard["panels"]
    assert len(text.encode()) < 1024 * 1024
    config_map = find(_real_monitoring(), "ConfigMap", f"{FULLNAME}-dashboard")
    assert json.loads(config_map["data"]["lynx-relay.json"]) == dashboard
