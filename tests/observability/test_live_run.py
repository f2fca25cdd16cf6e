"""The dashboard and the alert rules against a real run: a relay (in-process, through the real
composition root) on the session's real Kafka with the fal emulator, scraped every second by a
real Prometheus (Debian's binary from scripts/prometheus) that loads the chart's rule file.

One run serves every test of this module: requests that succeed, one that fal fails
(``[emulator:job-error]``), messages that are dead-lettered, and a duplicate. Budgets far above
the run's spend (``TENANTS``) make the relay export its spend and budget gauges, which only
exist with a budget, for the panels of the row Spend and budgets. The run happens
in two waves, because a labelled counter's first increment is invisible to rate(): the first
wave creates the result series, the second moves them, so rates and the error-ratio rules see
real values.

Setting LYNX_DASHBOARD_SNAPSHOT=<file.json> also records every panel query over the run
(query_range) for ``dashboards/render.py``, after the checks' data is taken;
LYNX_DASHBOARD_SNAPSHOT_SECONDS=<n> first keeps traffic flowing that much longer, for a fuller
picture.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dashboards.promql import (
    DASHBOARD,
    PanelQuery,
    PrometheusAPI,
    alert_rules,
    load_alerts,
    metric_names,
    panel_queries,
    substitute,
)
from fal_emulator.config import EmulatorConfig
from tests.integration.conftest import (
    consume,
    create_topics,
    emulator_running,
    produce,
    relay_running,
    relay_settings,
    request,
)
from tests.observability.conftest import SCRAPE_JOB, eventually, poll_until, prometheus_running

SNAPSHOT = os.environ.get("LYNX_DASHBOARD_SNAPSHOT")
EXTRA_TRAFFIC_S = float(os.environ.get("LYNX_DASHBOARD_SNAPSHOT_SECONDS", "0") or 0)

# The module's one run happens inside the first test's time budget.
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120 + EXTRA_TRAFFIC_S)]

JOB_ERROR = "A person carves a pumpkin [emulator:job-error]"
# Shorter rate windows than the checks' 1m when recording a picture: a one-minute run should
# show its shape, not one ramp.
SNAPSHOT_VARIABLES = {"job": SCRAPE_JOB, "namespace": ".*", "__rate_interval": "15s"}
# Budgets for the requests' tenant (default) and the group that the run never reaches (a job
# costs dollars): the spend and budget gauges exist only with a budget. A monthly budget needs
# a ledger that keeps a month (RELAY_DEDUPE_RETENTION_S).
TENANTS = """\
default:
  budget: {daily: 10000, monthly: 100000, policy: hold}
group_budget: {monthly: 1000000, policy: hold}
"""
MONTH_AND_A_DAY_S = 33 * 24 * 3600


@dataclass(frozen=True)
class Observed:
    """What the run left behind, gathered while everything was still up."""

    metrics_text: str  # the relay's /metrics at the end
    answers: dict[PanelQuery, list[dict[str, Any]]]  # each panel query's instant result
    rule_groups: list[dict[str, Any]]  # /api/v1/rules after every rule was evaluated
    up: list[dict[str, Any]]  # up{job="lynx-relay"}


def dashboard_queries() -> list[PanelQuery]:
    return panel_queries(json.loads(DASHBOARD.read_text()))


def results_seen(api: PrometheusAPI, count: int) -> bool:
    answer = api.query(f'sum(lynx_relay_results_total{{job="{SCRAPE_JOB}"}}) >= {count}')
    return bool(answer)


def all_rules_evaluated(api: PrometheusAPI) -> list[dict[str, Any]] | None:
    groups = api.rules()
    rules = [rule for group in groups for rule in group["rules"]]
    return groups if rules and all(r["health"] != "unknown" for r in rules) else None


def error_ratio_alert_active(api: PrometheusAPI) -> bool:
    """Both LynxRelayErrorRatioHigh rules (fast and slow burn) pending or firing."""
    states = [
        rule["state"]
        for group in api.rules()
        for rule in group["rules"]
        if rule.get("name") == "LynxRelayErrorRatioHigh"
    ]
    return len(states) == 2 and all(s in {"pending", "firing"} for s in states)


def panel_answers(api: PrometheusAPI) -> dict[PanelQuery, list[dict[str, Any]]]:
    return {q: api.query(substitute(q.expr)) for q in dashboard_queries()}


async def observe(bootstrap: str, bin_dir: Path, folder: Path) -> Observed:
    topics = await create_topics(bootstrap)
    config = EmulatorConfig(run_time=(0.3, 1.2), queue_wait=(0.1, 0.5), seed=5)
    tenants = folder / "tenants.yaml"
    tenants.write_text(TENANTS, encoding="utf-8")
    async with emulator_running(config) as fal:
        settings = relay_settings(
            topics,
            fal.base_url,
            RELAY_MAX_IN_FLIGHT="4",
            RELAY_TENANTS_FILE=str(tenants),
            RELAY_DEDUPE_RETENTION_S=str(MONTH_AND_A_DAY_S),
            # A budget paces a tenant's starts (one a second by default, for the overshoot
            # bound of several replicas): nothing here is about that, so not 9 s of pacing.
            RELAY_BUDGET_PACE_S="0.05",
        )
        async with relay_running(settings) as relay:
            target = f"127.0.0.1:{relay.ops_port}"
            with prometheus_running(bin_dir, folder / "prometheus", target) as api:
                started = time.time()
                # Wave 1: one of each outcome, so every labelled series exists.
                await produce(
                    bootstrap,
                    topics.requests,
                    [
                        request("obs-ok-1"),
                        request("obs-fail-1", prompt=JOB_ERROR),
                        b"this is not JSON",  # dead letter, reason not_json
                        request("obs-invalid-1", input={"prompt": "no image"}),  # schema
                    ],
                )
                await consume(bootstrap, topics.results, 3)
                await eventually(lambda: results_seen(api, 3), "Prometheus to scrape wave 1")
                # Wave 2: moves every series (rate() needs two samples that differ).
                await produce(
                    bootstrap,
                    topics.requests,
                    [
                        *(request(f"obs-ok-{i}") for i in range(2, 6)),
                        request("obs-ok-2"),  # a duplicate: skipped, no second job or event
                        request("obs-fail-2", prompt=JOB_ERROR),
                        request("obs-fail-3", prompt=JOB_ERROR),
                        b"{ still not JSON",
                    ],
                )
                await consume(bootstrap, topics.results, 9)
                await eventually(lambda: results_seen(api, 9), "Prometheus to scrape wave 2")
                await eventually(
                    lambda: api.query(
                        f'sum(lynx_relay_consumer_lag_records{{job="{SCRAPE_JOB}"}}) == 0'
                    ),
                    "the consumer lag to drain (every request finished and committed)",
                )
                # A third of the jobs rate() sees failed: far above both burn-rate thresholds.
                await eventually(
                    lambda: error_ratio_alert_active(api), "LynxRelayErrorRatioHigh to be pending"
                )
                # The last answers either way: the tests below name the queries left empty.
                answers = await poll_until(
                    lambda: panel_answers(api), lambda got: all(got.values()), within=20
                )
                groups = await eventually(
                    lambda: all_rules_evaluated(api), "every rule to be evaluated"
                )
                up = await asyncio.to_thread(api.query, f'up{{job="{SCRAPE_JOB}"}}')
                async with httpx.AsyncClient() as http:
                    metrics_text = (await http.get(f"http://{target}/metrics")).text
                if SNAPSHOT:
                    # After the checks' data is taken, so more traffic cannot change it.
                    await keep_traffic_flowing(bootstrap, topics.requests, EXTRA_TRAFFIC_S)
                    await asyncio.to_thread(write_snapshot, api, Path(SNAPSHOT), started)
    return Observed(metrics_text, answers, groups, up)


async def keep_traffic_flowing(bootstrap: str, topic: str, seconds: float) -> None:
    """For the picture only: a wave of traffic that rises and falls (up to twice the in-flight
    limit), about one job in eight failing at fal, and now and then a duplicate or a message
    that is not JSON."""
    end = time.monotonic() + seconds
    n = 0
    tick = 0
    while time.monotonic() < end:
        tick += 1
        batch = []
        for _ in range(1 + (tick * 3) % 8):
            n += 1
            prompt = (
                JOB_ERROR if n % 8 == 0 else f"A person carves a pumpkin [emulator:run={n % 3}]"
            )
            batch.append(request(f"obs-more-{n}", prompt=prompt))
        if tick % 4 == 0:
            batch.append(request(f"obs-more-{n}"))  # a duplicate of the last one
        if tick % 7 == 0:
            batch.append(b"not JSON either")
        await produce(bootstrap, topic, batch)
        await asyncio.sleep(2)


def write_snapshot(api: PrometheusAPI, path: Path, started: float) -> None:
    """Every panel query over the run, as dashboards/render.py reads it."""
    end = time.time()
    start = started - 5
    step = max(1.0, round((end - start) / 200, 1))
    window = f"{max(30, int(end - start) + 30)}s"
    variables = {**SNAPSHOT_VARIABLES, "__range": window}
    panels: dict[str, list[dict[str, Any]]] = {}
    for q in dashboard_queries():
        series = api.query_range(substitute(q.expr, variables), start, end, step)
        panels.setdefault(str(q.panel_id), []).append(
            {"refId": q.ref_id, "legend": q.legend, "series": series}
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"start": start, "end": end, "step": step, "panels": panels}))


@pytest.fixture(scope="module")
def observed(
    kafka_bootstrap: str, prometheus_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Observed:
    # A sync fixture around asyncio.run: the run's data outlives its event loop, and each test
    # below only reads it.
    folder = tmp_path_factory.mktemp("observability")
    return asyncio.run(observe(kafka_bootstrap, prometheus_bin, folder))


def exported_names(metrics_text: str) -> dict[str, set[str]]:
    """Sample names the relay exports (and may export), with their label names. A labelled
    counter with no child yet is still declared (# TYPE) with its family's name."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for suffix in suffixes.get(family.type, ("",)):
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_every_metric_in_the_dashboard_and_the_alerts_is_exported(observed: Observed) -> None:
    """Each metric name any panel query or rule expression reads is on the relay's /metrics
    after a run (histograms by their _bucket/_sum/_count series, counters by _total); `up`
    is Prometheus' own and must show the relay's target up."""
    exported = exported_names(observed.metrics_text)
    exprs = [q.expr for q in dashboard_queries()]
    exprs += [rule["expr"] for rule in alert_rules(load_alerts())]
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert "up" in used
    assert {"lynx_relay_results_total", "process_cpu_seconds_total"} <= used
    missing = sorted(name for name in used - {"up"} if name not in exported)
    assert missing == [], f"used by the dashboard or alerts but not exported: {missing}"
    assert [s["value"][1] for s in observed.up] == ["1"]


def test_the_run_exported_the_outcomes_it_caused(observed: Observed) -> None:
    """The relay's own counters agree with the traffic: 5 succeeded, 3 fal failures, one
    invalid_request, 2 dead letters (not JSON) plus the schema rejection, one duplicate."""
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(observed.metrics_text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("lynx_relay_results_total", status="succeeded", error_code="none") == 5
    assert value("lynx_relay_results_total", status="failed", error_code="fal_failed") == 3
    assert value("lynx_relay_results_total", status="failed", error_code="invalid_request") == 1
    assert value("lynx_relay_dead_letters_total") == 3
    assert value("lynx_relay_duplicates_total") == 1


def test_every_panel_query_returns_data_from_the_real_scrape(observed: Observed) -> None:
    """Every query of every panel, with Grafana's variables filled in (job=lynx-relay, all
    namespaces, $__rate_interval=1m, $__range=5m), returns at least one series from the
    Prometheus that scraped the run."""
    empty = [
        f"{q.panel_title} [{q.ref_id}]" for q, answer in observed.answers.items() if not answer
    ]
    assert empty == []
    assert len(observed.answers) == len(dashboard_queries())


def test_the_panels_show_the_runs_numbers(observed: Observed) -> None:
    """A few panels read back what happened: in-flight limit 4, consumer lag drained to 0,
    a positive spend, the failed share of job results as rate() sees it (the second
    wave's: 2 of 6; the first wave only created the series), spend this month for the
    requests' tenant and the group alike, and no tenant at a budget line."""
    by_title = {(q.panel_title, q.legend): answer for q, answer in observed.answers.items()}

    def value(title: str, legend: str) -> float:
        (series,) = by_title[(title, legend)]
        return float(series["value"][1])

    assert value("Jobs in flight vs the limit", "limit") == 4
    assert value("Consumer lag", "records") == 0
    assert value("Failed results (time range)", "failed") == pytest.approx(2 / 6, abs=0.1)
    assert value("Spend (time range)", "spend") > 0
    month = {
        s["metric"]["tenant"]: float(s["value"][1])
        for s in by_title[("Spend this month per tenant", "{{tenant}}")]
    }
    assert month["default"] > 0
    assert month["all"] == pytest.approx(month["default"])
    assert value("Tenants at a budget line", "at a budget line") == 0


def test_the_rules_load_and_evaluate_on_the_real_data(observed: Observed) -> None:
    """Prometheus loaded alerts.yaml as is: every recording and alerting rule evaluated with
    health ok. On this run (a third of the jobs failed at fal) both error-ratio rules are
    active; the relay is up, exports its metrics, has few dead letters and a key fal accepts,
    so those alerts are inactive; nothing fires (every `for` is longer than the run)."""
    rules = [rule for group in observed.rule_groups for rule in group["rules"]]
    assert len(rules) == len(alert_rules(load_alerts()))
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert bad == []
    states: dict[str, set[str]] = {}
    for rule in rules:
        if rule["type"] == "alerting":
            states.setdefault(rule["name"], set()).add(rule["state"])
    assert states.pop("LynxRelayErrorRatioHigh") == {"pending"}
    for quiet in (
        "LynxRelayDown",
        "LynxRelayMetricsAbsent",
        "LynxRelayDeadLetterSpike",
        "LynxRelayFalUnauthorized",
    ):
        assert states.pop(quiet) == {"inactive"}, quiet
    # No results / lag growing may be pending for a moment while the first wave waits.
    assert all("firing" not in s for s in states.values()), states
