"""The queries of the dashboard and the alert rules, made runnable against a plain Prometheus.

Shared by the tests (``tests/observability``) and the picture (``render.py``): where the
queries are, which metric names they use, how Grafana's variables become concrete values, and a
small client for Prometheus' HTTP API.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "helm" / "lynx-relay" / "files" / "dashboard.json"
ALERTS = ROOT / "helm" / "lynx-relay" / "files" / "alerts.yaml"

# Names the queries may use: the relay's own metrics, the process collector's, and `up`
# (which Prometheus writes for every scrape). Recording-rule names (lynx_relay:...) have a
# colon after the prefix and are deliberately not matched: they are not exported.
METRIC_NAME = re.compile(r"\b(?:lynx_relay_\w+|process_\w+|up)\b")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")

# What the dashboard's variables stand for when its queries run outside Grafana: the run's
# only job, every namespace (the label is absent outside Kubernetes), and windows wide
# enough to hold a short test run.
DEFAULT_VARIABLES: Mapping[str, str] = {
    "job": "lynx-relay",
    "namespace": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}


@dataclass(frozen=True)
class PanelQuery:
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str
    legend: str


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """Every target of every panel (also panels nested in collapsed rows)."""

    def walk(panels: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    return [
        PanelQuery(
            panel["id"],
            panel["title"],
            target["refId"],
            target["expr"],
            target.get("legendFormat", ""),
        )
        for panel in walk(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def alert_rules(rules_file: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every rule (alerting and recording) of a Prometheus rule file."""
    return [rule for group in rules_file["groups"] for rule in group["rules"]]


def load_alerts(path: Path = ALERTS) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (string literals are skipped)."""
    return set(METRIC_NAME.findall(_STRING.sub('""', expr)))


def substitute(expr: str, variables: Mapping[str, str] = DEFAULT_VARIABLES) -> str:
    """Grafana's ``$name`` / ``${name}`` replaced by ``variables``; an unknown one is an error
    (a typo in the dashboard would otherwise reach Prometheus as a parse error)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return variables[name]

    return _VARIABLE.sub(value, expr)


class PrometheusAPI:
    """The few calls of Prometheus' HTTP API the tests and the picture need."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, **params: str | float) -> Any:
        response = self._http.get(path, params=params)
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def ready(self) -> bool:
        try:
            return self._http.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self._get("/api/v1/query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range matrix (``[{"metric": {...}, "values": [[t, "v"], ...]}, ...]``)."""
        data = self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        result: list[dict[str, Any]] = data["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups with each rule's health, state and last error."""
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return groups

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active
