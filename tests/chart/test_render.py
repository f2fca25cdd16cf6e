"""The chart renders, and everything it renders is valid Kubernetes.

Each scenario (defaults, KEDA, HPA, monitoring, existingSecret, NetworkPolicy, SASL/TLS, and
one with nearly every option set) renders without error, and every object validates strictly
for both Kubernetes versions we support; `helm lint --strict` finds nothing but the advice to
add an icon.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from tests.chart import chartlib
from tests.chart.chartlib import (
    CHART,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    SCENARIOS,
    Manifest,
    render,
    validate,
)

# Scenario name -> every object it renders; rendered once per module (each call is a few ms,
# but the assertions below walk them 2 x scenarios times).
RENDERED = {name: render(values) for name, values in SCENARIOS.items()}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_object_is_valid_kubernetes(scenario: str, version: str) -> None:
    """Every object of every scenario passes strict schema validation for the version."""
    objects = RENDERED[scenario]
    assert objects
    for obj in objects:
        try:
            validate(obj, version)
        except Exception as exc:  # the message names the object, not just the field
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            pytest.fail(f"{scenario}: {name} invalid for Kubernetes {version}: {exc}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_monitoring_objects_with_the_real_monitoring_files_are_valid(version: str) -> None:
    """ServiceMonitor, PrometheusRule (from files/alerts.yaml) and the dashboard ConfigMap
    (from files/dashboard.json) validate, using the chart's own monitoring files."""
    if not chartlib.monitoring_files_present():
        pytest.skip("helm/lynx-relay/files/alerts.yaml or dashboard.json not written yet")
    objects = render(chartlib.monitoring_values())
    kinds = {o["kind"] for o in objects}
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    for obj in objects:
        validate(obj, version)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_is_namespaced_and_labelled(scenario: str) -> None:
    """Each object names the release namespace (or its configured monitoring namespace) and
    carries the chart's standard labels, so `kubectl -l app.kubernetes.io/instance=` finds all."""
    for obj in RENDERED[scenario]:
        metadata = obj["metadata"]
        assert metadata.get("namespace") in {NAMESPACE, "monitoring"}, metadata["name"]
        labels = metadata["labels"]
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "lynx-relay-0.1.0"


def test_default_render_has_the_expected_objects() -> None:
    """Defaults: the workload and its companions; nothing optional, and no Secret because
    there is no credential to store."""
    kinds = sorted(o["kind"] for o in RENDERED["default"])
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Pod",  # the `helm test` hook
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]


def test_common_labels_and_annotations_reach_every_object() -> None:
    """commonLabels and commonAnnotations are on every object the chart renders."""
    for obj in RENDERED["everything"]:
        if obj["kind"] == "Pod":  # the test hook keeps its own minimal metadata
            continue
        assert obj["metadata"]["labels"]["team"] == "video", obj["kind"]
        assert obj["metadata"]["annotations"]["owner"] == "video@example.com", obj["kind"]


def test_helm_lint_strict_is_clean() -> None:
    """`helm lint --strict` with the default values reports no warning or error; the only
    message allowed is the informational "icon is recommended"."""
    report = helm.lint(CHART, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    problems = [
        m for m in report["messages"] if m["severity"] >= 2 or "icon" not in str(m["error"])
    ]
    assert problems == []


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_strict_is_clean_for_each_scenario(scenario: str) -> None:
    """Lint also passes with each scenario's values (lint renders with them)."""
    report = helm.lint(CHART, SCENARIOS[scenario], strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_helm_lint_strict_is_clean_with_monitoring_on() -> None:
    """Lint passes with ServiceMonitor, PrometheusRule and the dashboard on (which read the
    chart's monitoring files)."""
    if not chartlib.monitoring_files_present():
        pytest.skip("helm/lynx-relay/files/alerts.yaml or dashboard.json not written yet")
    report = helm.lint(CHART, chartlib.monitoring_values(), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_cli_accepts_the_default_render(tmp_path: Path, version: str) -> None:
    """The kubernetes-validate command line (`--strict`), as an operator would run it on
    `helm template` output, accepts the default render."""
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(RENDERED["default"]), encoding="utf-8")
    done = subprocess.run(  # noqa: S603 - our own interpreter and a file we wrote
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARN" not in done.stdout  # no kind went unchecked for want of a schema


def test_validation_catches_an_unknown_field() -> None:
    """The validator used above is really strict: a misspelt field fails it."""
    deployment: Manifest = chartlib.deployment(render())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(Exception, match="readinesProbe"):
        validate(deployment, KUBERNETES_VERSIONS[0])
