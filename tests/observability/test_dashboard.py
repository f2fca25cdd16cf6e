"""The Grafana dashboard (helm/lynx-relay/files/dashboard.json): generated from
dashboards/generate.py, self-contained for Grafana's sidecar, laid out on the grid, every
query valid PromQL, and covering what the issue asks the dashboard to show."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from dashboards import generate
from dashboards.promql import DASHBOARD, metric_names, panel_queries, substitute
from tests.observability.conftest import promtool


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_checked_in_dashboard_is_the_generators_output() -> None:
    """The JSON the chart ships is exactly what the generator writes: edits go to the
    generator (`uv run python dashboards/generate.py`), never to the JSON."""
    assert DASHBOARD.read_text() == generate.render(), (
        "helm/lynx-relay/files/dashboard.json is stale: run `uv run python dashboards/generate.py`"
    )


def test_the_datasource_is_a_template_variable_everywhere() -> None:
    """No datasource is baked in: a `datasource` variable of type prometheus, and every panel
    and query uses ${datasource}; the job and namespace filters are query variables."""
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["type"] == variables["namespace"]["type"] == "query"
    assert "__inputs" not in board  # the sidecar loads the file as is; nothing to fill in
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panels_tile_the_grid_without_overlap() -> None:
    """Panel ids are unique and no two panels cover the same grid cell of the 24-wide grid."""
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] >= 0, panel["title"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_panel_query_is_valid_promql(prometheus_bin: Path, tmp_path: Path) -> None:
    """Every query, with Grafana's variables filled in, parses as PromQL: promtool checks
    them as recording rules (offline, so a syntax slip fails here and not in Grafana)."""
    rules = [
        {"record": f"dashboard:panel_{q.panel_id}_{q.ref_id}", "expr": substitute(q.expr)}
        for q in panel_queries(dashboard())
    ]
    path = tmp_path / "dashboard_queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool(prometheus_bin, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    """The panels cover requests, results, in-flight vs limit, fal queue wait and run time
    quantiles, end-to-end latency, dead letters, lag per partition, commits and failures,
    rebalances, fal HTTP calls, video seconds and cost, duplicates and resumes, the ledger
    write window, process CPU and memory, per tenant (issue 12) what waits, runs and starts,
    the backlog wait p50/p95, and the replicas' fleet shares, and for lost submit answers
    (issue 13) reconciliations started and their outcomes, the time to resolve p50/p95, and
    whether fal's request history is available, and (issue 14) spend from the billed spend
    counter (not estimated from video seconds), billed units, spend per tenant per hour, this
    month's spend, budget used per tenant and period, the projected month-end spend, the
    tenants at a budget line and the unit price in force."""
    queries = panel_queries(dashboard())
    used = set().union(*(metric_names(q.expr) for q in queries))
    wanted = {
        "lynx_relay_requests_consumed_total",
        "lynx_relay_results_total",
        "lynx_relay_jobs_in_flight",
        "lynx_relay_max_in_flight",
        "lynx_relay_job_queue_wait_seconds_bucket",
        "lynx_relay_job_run_seconds_bucket",
        "lynx_relay_job_end_to_end_seconds_bucket",
        "lynx_relay_dead_letters_total",
        "lynx_relay_consumer_lag_records",
        "lynx_relay_commits_total",
        "lynx_relay_commit_failures_total",
        "lynx_relay_rebalances_total",
        "lynx_relay_fal_http_requests_total",
        "lynx_relay_video_seconds_total",
        "lynx_relay_price_per_video_second_dollars",
        "lynx_relay_duplicates_total",
        "lynx_relay_jobs_resumed_total",
        "lynx_relay_ledger_write_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "lynx_relay_tenant_waiting",
        "lynx_relay_tenant_running",
        "lynx_relay_tenant_starts_total",
        "lynx_relay_tenant_wait_seconds_bucket",
        "lynx_relay_fleet_share",
        "lynx_relay_reconciliations_started_total",
        "lynx_relay_reconciliations_total",
        "lynx_relay_reconcile_seconds_bucket",
        "lynx_relay_fal_history_available",
        "lynx_relay_tenant_spend_dollars_total",
        "lynx_relay_tenant_billed_units_total",
        "lynx_relay_spend_period_dollars",
        "lynx_relay_budget_dollars",
        "lynx_relay_budget_reached",
    }
    assert wanted - used == set()
    text = " ".join(q.expr for q in queries)
    for metric in ("job_queue_wait_seconds", "job_run_seconds", "job_end_to_end_seconds"):
        for quantile in ("0.5", "0.95", "0.99"):
            assert (
                f"histogram_quantile({quantile}, sum by (le) (rate(lynx_relay_{metric}_bucket"
                in text
            )
    for quantile in ("0.5", "0.95"):
        assert (
            f"histogram_quantile({quantile}, sum by (tenant, le) "
            "(rate(lynx_relay_tenant_wait_seconds_bucket" in text
        )
    assert "sum by (outcome) (rate(lynx_relay_reconciliations_total{" in text
    for quantile in ("0.5", "0.95"):
        assert (
            f"histogram_quantile({quantile}, sum by (le) "
            "(rate(lynx_relay_reconcile_seconds_bucket" in text
        )
    assert "min(lynx_relay_fal_history_available{" in text
    # cost is what fal billed (the spend counter), never video seconds times the price
    assert re.search(
        r"sum\(rate\(lynx_relay_tenant_spend_dollars_total\{[^}]*\}\[\S+\]\)\) \* 3600", text
    )
    assert re.search(
        r"sum\(rate\(lynx_relay_tenant_spend_dollars_total\{[^}]*\}\[\S+\]\)\) \* 86400", text
    )
    assert "sum(increase(lynx_relay_tenant_spend_dollars_total{" in text
    assert not re.search(r"video_seconds_total.*\* max\(lynx_relay_price", text)
    # per tenant: spend per hour, this month, budget used per period, the month-end projection
    assert "sum by (tenant) (rate(lynx_relay_tenant_spend_dollars_total{" in text
    assert re.search(
        r"max by \(tenant\) \(lynx_relay_spend_period_dollars\{[^}]*period=\"month\"", text
    )
    assert re.search(
        r"max by \(tenant, period\) \(lynx_relay_spend_period_dollars\{[^}]*\}\) "
        r"/ max by \(tenant, period\) \(lynx_relay_budget_dollars\{",
        text,
    )
    assert re.search(r"rate\(lynx_relay_tenant_spend_dollars_total\{[^}]*\}\[6h\]\)", text)
    assert "(days_in_month() - day_of_month() + 1)" in text
    assert "sum(max by (tenant) (lynx_relay_budget_reached{" in text
    # every query is filtered to the chosen deployment
    for q in queries:
        if metric_names(q.expr):
            assert 'job=~"$job"' in q.expr, q.panel_title
