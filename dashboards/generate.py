"""Generate the relay's Grafana dashboard from code.

``uv run python dashboards/generate.py`` rewrites ``helm/lynx-relay/files/dashboard.json``;
``--check`` only compares (exit 1 when the checked-in file is stale). The Helm chart ships that
file in a ConfigMap for Grafana's dashboard sidecar, so the JSON is self-contained: the
datasource is a template variable (``${datasource}``), not an import-time input.

Every query filters on ``namespace=~"$namespace", job=~"$job"``: in Kubernetes (Prometheus
Operator) each release is one job in one namespace; outside it the namespace label is absent,
and ``=~".*"`` (the namespace variable's "All") also matches series without it.

Panels are built in rows, left to right; ``gridPos`` and ids are assigned at the end, so adding
a panel never means renumbering others by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "helm" / "lynx-relay" / "files" / "dashboard.json"

UID = "lynx-relay"
TITLE = "lynx-relay"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
QUANTILES = (0.5, 0.95, 0.99)
GRID_WIDTH = 24
# What finished jobs cost, per tenant and replica (issue 14): the spend panels' counter.
SPEND = "lynx_relay_tenant_spend_dollars_total"

RED = "red"
ORANGE = "orange"
GREEN = "green"
BLUE = "blue"
GREY = "text"

Json = dict[str, Any]


def sel(*matchers: str) -> str:
    """The dashboard's label filter plus ``matchers``, as a PromQL selector body."""
    return "{" + ", ".join(['namespace=~"$namespace"', 'job=~"$job"', *matchers]) + "}"


def rate(metric: str, *matchers: str, window: str = RATE) -> str:
    return f"rate({metric}{sel(*matchers)}[{window}])"


def quantile_exprs(metric: str, quantiles: Sequence[float] = QUANTILES) -> list[tuple[float, str]]:
    """p50/p95/p99 (or ``quantiles``) of a histogram across replicas (buckets are summed
    before the quantile)."""
    return [
        (q, f"histogram_quantile({q}, sum by (le) ({rate(metric + '_bucket')}))") for q in quantiles
    ]


def zero_if_none(expr: str) -> str:
    """A labelled failure counter has no series until its first failure; show 0, not
    "No data", so "no failures" and "no metrics" look different on the dashboard."""
    return f"{expr} or on() vector(0)"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass
class Panel:
    """One panel; ``width``/``height`` are grid units, placed by ``layout``."""

    title: str
    description: str
    targets: Sequence[Target]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    height: int = 8
    overrides: list[Json] = field(default_factory=list)
    thresholds: list[tuple[float | None, str]] = field(default_factory=lambda: [(None, GREEN)])
    decimals: int | None = None
    stacked: bool = False


@dataclass
class Row:
    title: str
    panels: list[Panel]


def color(matcher: str, options: str, fixed: str, **extra: Any) -> Json:
    """An override that paints the series matching ``options`` in one color (plus ``extra``)."""
    properties: list[Json] = [{"id": "color", "value": {"mode": "fixed", "fixedColor": fixed}}]
    properties += [{"id": key.replace("_", "."), "value": value} for key, value in extra.items()]
    return {"matcher": {"id": matcher, "options": options}, "properties": properties}


DASHED = {"fill": "dash", "dash": [10, 10]}


# --------------------------------------------------------------------------------- panels


def overview() -> Row:
    failed = rate(
        "lynx_relay_results_total",
        'status="failed"',
        'error_code!~"invalid_request|budget_exceeded"',
        window="$__range",
    )
    judged = rate(
        "lynx_relay_results_total",
        'error_code!~"invalid_request|budget_exceeded"',
        window="$__range",
    )
    return Row(
        "Overview",
        [
            Panel(
                "Replicas up",
                "Relay targets Prometheus scrapes successfully (up == 1). 0 means the relay is "
                "down or not scraped: see the LynxRelayDown alert.",
                [Target(f"sum(up{sel()})", "up")],
                kind="stat",
                width=4,
                height=4,
                thresholds=[(None, RED), (1, GREEN)],
            ),
            Panel(
                "Requests in",
                "Messages taken from the requests topic per second, all replicas.",
                [Target(f"sum({rate('lynx_relay_requests_consumed_total')})", "requests/s")],
                unit="reqps",
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Jobs in flight",
                "fal jobs submitted and not finished, all replicas.",
                [Target(f"sum(lynx_relay_jobs_in_flight{sel()})", "in flight")],
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Consumer lag",
                "Request records not yet finished and committed, all partitions.",
                [Target(f"sum(lynx_relay_consumer_lag_records{sel()})", "records")],
                kind="stat",
                width=4,
                height=4,
                thresholds=[(None, GREEN), (100, ORANGE), (1000, RED)],
            ),
            Panel(
                "Failed results (time range)",
                "Share of result events that failed over the dashboard's time range, not "
                "counting invalid_request (the caller's fault). The error-ratio alert's SLO "
                "is 99 % succeeded.",
                [Target(f"sum({failed}) / sum({judged})", "failed")],
                unit="percentunit",
                kind="stat",
                width=4,
                height=4,
                decimals=1,
                thresholds=[(None, GREEN), (0.01, ORANGE), (0.06, RED)],
            ),
            Panel(
                "Spend (time range)",
                "What the jobs that finished in the time range cost, all tenants: fal's "
                "billed units times the account's unit price (estimated from num_frames / "
                "frames_per_second where fal gave no units). See the row Spend and budgets.",
                [Target(f"sum(increase({SPEND}{sel()}[$__range]))", "spend")],
                unit="currencyUSD",
                kind="stat",
                width=4,
                height=4,
                decimals=2,
                thresholds=[(None, BLUE)],
            ),
        ],
    )


def traffic() -> Row:
    failed = rate(
        "lynx_relay_results_total",
        'status="failed"',
        'error_code!~"invalid_request|budget_exceeded"',
    )
    judged = rate("lynx_relay_results_total", 'error_code!~"invalid_request|budget_exceeded"')
    return Row(
        "Requests and results",
        [
            Panel(
                "Requests in / s",
                "Messages consumed from the requests topic, and the share that were "
                "duplicates of a request in flight or recently finished (no job started).",
                [
                    Target(f"sum({rate('lynx_relay_requests_consumed_total')})", "consumed"),
                    Target(f"sum({rate('lynx_relay_duplicates_total')})", "duplicates"),
                ],
                unit="reqps",
                overrides=[color("byName", "duplicates", GREY)],
            ),
            Panel(
                "Results by status and error code",
                "Result events published per second. Failures are red; invalid_request is the "
                "caller's fault (validation), the other codes are ours or fal's.",
                [
                    Target(
                        f"sum by (status, error_code) ({rate('lynx_relay_results_total')})",
                        "{{status}} {{error_code}}",
                    )
                ],
                unit="reqps",
                stacked=True,
                overrides=[
                    color("byRegexp", "succeeded.*", GREEN),
                    color("byRegexp", "failed invalid_request", ORANGE),
                    color("byRegexp", "failed (?!invalid_request).*", RED),
                    color("byRegexp", "cancelled.*", GREY),
                ],
            ),
            Panel(
                "Error ratio (SLO 99 % succeeded)",
                "Failed results over all results, without invalid_request. The dashed lines "
                "are the error-ratio alert's burn-rate thresholds (14.4x and 6x a 1 % budget).",
                [
                    Target(f"sum({failed}) / sum({judged})", "failed share"),
                    Target("vector(0.144)", "page: 14.4x burn"),
                    Target("vector(0.06)", "ticket: 6x burn"),
                ],
                unit="percentunit",
                overrides=[
                    color("byName", "failed share", RED),
                    color("byRegexp", "page.*", ORANGE, custom_lineStyle=DASHED),
                    color("byRegexp", "ticket.*", GREY, custom_lineStyle=DASHED),
                ],
            ),
        ],
    )


def jobs() -> Row:
    waits = [
        Target(expr, f"queue wait p{round(q * 100)}")
        for q, expr in quantile_exprs("lynx_relay_job_queue_wait_seconds")
    ]
    runs = [
        Target(expr, f"run time p{round(q * 100)}")
        for q, expr in quantile_exprs("lynx_relay_job_run_seconds")
    ]
    e2e = [
        Target(expr, f"p{round(q * 100)}")
        for q, expr in quantile_exprs("lynx_relay_job_end_to_end_seconds")
    ]
    return Row(
        "Jobs and latency",
        [
            Panel(
                "Jobs in flight vs the limit",
                "fal jobs submitted and not finished, against RELAY_MAX_IN_FLIGHT summed over "
                "replicas. At the limit the relay pauses its partitions (paused replicas); a "
                "replica that took over a dead peer's jobs may be above it for a while.",
                [
                    Target(f"sum(lynx_relay_jobs_in_flight{sel()})", "in flight"),
                    Target(f"sum(lynx_relay_max_in_flight{sel()})", "limit"),
                    Target(f"sum(lynx_relay_partitions_paused{sel()})", "replicas paused"),
                ],
                overrides=[
                    color("byName", "limit", RED, custom_lineStyle=DASHED),
                    color("byName", "replicas paused", ORANGE),
                ],
            ),
            Panel(
                "fal queue wait vs run time",
                "Queue wait: submit until fal reported the job running (fal's capacity). Run "
                "time: running until completed (the model). Quantiles over all replicas.",
                [*waits, *runs],
                unit="s",
                overrides=[
                    color("byRegexp", "queue wait.*", ORANGE),
                    color("byRegexp", "run time.*", BLUE),
                ],
            ),
            Panel(
                "End-to-end latency",
                "From receiving a request until its result event was acknowledged by Kafka.",
                e2e,
                unit="s",
            ),
        ],
    )


def kafka() -> Row:
    return Row(
        "Kafka",
        [
            Panel(
                "Consumer lag per partition",
                "Records of each requests partition not yet finished and committed (high "
                "watermark minus committed offset), as seen by the replica that owns it. "
                "In-flight jobs count: lag above the in-flight limit is work waiting in Kafka.",
                [
                    Target(
                        f"max by (topic, partition) (lynx_relay_consumer_lag_records{sel()})",
                        "{{topic}}/{{partition}}",
                    )
                ],
            ),
            Panel(
                "Dead letters",
                "Messages copied to the dead-letter topic per second, by reason (the "
                "x-relay-error-code header). A spike means a producer sends broken messages.",
                [
                    Target(
                        f"sum by (reason) ({rate('lynx_relay_requests_rejected_total')})",
                        "{{reason}}",
                    ),
                    Target(f"sum({rate('lynx_relay_dead_letters_total')})", "all dead letters"),
                ],
                unit="reqps",
                overrides=[color("byName", "all dead letters", RED)],
            ),
            Panel(
                "Commits and write failures",
                "Offset commits per second, and commits and Kafka writes (results, dead "
                "letters, ledger) that failed and are being retried. Failures are red.",
                [
                    Target(f"sum({rate('lynx_relay_commits_total')})", "commits"),
                    Target(f"sum({rate('lynx_relay_commit_failures_total')})", "commit failures"),
                    Target(
                        zero_if_none(
                            f"sum by (topic_kind) ({rate('lynx_relay_publish_failures_total')})"
                        ),
                        "write failures {{topic_kind}}",
                    ),
                ],
                unit="ops",
                overrides=[
                    color("byName", "commits", GREEN),
                    color("byRegexp", ".*failures.*", RED),
                ],
            ),
            Panel(
                "Rebalances",
                "Partition assignment changes seen by each replica (assigned and revoked both "
                "count). Bursts outside deploys mean replicas leave the group (crashes, "
                "session timeouts).",
                [
                    Target(
                        f"sum by (instance) (increase(lynx_relay_rebalances_total{sel()}[{RATE}]))",
                        "{{instance}}",
                    )
                ],
                width=12,
                height=7,
            ),
            Panel(
                "Ledger entries by state",
                "Entries in the job ledger (one per request_id): submitted = at fal now, "
                "finished = remembered for dedupe, rejected = dead-lettered positions.",
                [
                    Target(
                        f"max by (state) (lynx_relay_ledger_entries{sel()})",
                        "{{state}}",
                    )
                ],
                width=12,
                height=7,
            ),
        ],
    )


def fal() -> Row:
    calls = rate("lynx_relay_fal_http_requests_total")
    errors = rate("lynx_relay_fal_http_requests_total", 'status_class=~"4xx|5xx|error"')
    return Row(
        "fal",
        [
            Panel(
                "fal HTTP calls by endpoint and status class",
                "Calls to fal's queue API per second. 4xx, 5xx and transport errors (error) "
                "are red and thick; 401/403 fail every job (see LynxRelayFalUnauthorized).",
                [
                    Target(
                        f"sum by (endpoint, status_class) ({calls})",
                        "{{endpoint}} {{status_class}}",
                    )
                ],
                unit="reqps",
                width=12,
                overrides=[
                    color("byRegexp", ".* (4xx|5xx|error)", RED, custom_lineWidth=3),
                    color("byRegexp", ".* 2xx", GREEN),
                ],
            ),
            Panel(
                "fal HTTP error share",
                "Share of fal calls per endpoint that did not answer 2xx/3xx.",
                [
                    Target(
                        zero_if_none(f"sum by (endpoint) ({errors}) / sum by (endpoint) ({calls})"),
                        "errors {{endpoint}}",
                    )
                ],
                unit="percentunit",
                width=8,
                overrides=[color("byRegexp", ".*", RED)],
            ),
            Panel(
                "fal key refused",
                "Replicas whose fal key is refused (401/403): they pause intake and retry "
                "until fal accepts the key again. Anything above 0 stops all work; see "
                "LynxRelayFalUnauthorized.",
                [Target(f"sum(lynx_relay_fal_key_refused{sel()})", "replicas")],
                kind="stat",
                width=4,
                thresholds=[(None, GREEN), (1, RED)],
            ),
        ],
    )


def lost_answers() -> Row:
    """Submits whose answer was lost, settled with fal's request history (issue 13; README
    "When a submit's answer is lost")."""
    per_minute = f"sum({rate('lynx_relay_reconciliations_started_total')}) * 60"
    outcomes = f"sum by (outcome) ({rate('lynx_relay_reconciliations_total')}) * 60"
    return Row(
        "Lost submit answers",
        [
            Panel(
                "Reconciliations started / min",
                "Submits whose outcome was unknown (an answer lost, or a process gone between "
                "fal's answer and the ledger's) that were looked for in fal's request history, "
                "per minute. A steady rate means submit answers get lost: look for submit 5xx "
                "and error in fal HTTP calls.",
                [Target(per_minute, "started / min")],
                width=6,
            ),
            Panel(
                "Reconciliation outcomes / min",
                "How reconciliations ended, per minute. adopted (green): fal had the job, it "
                "is watched and not paid again. submitted_again (orange): not in fal's history "
                "after RELAY_RECONCILE_GIVE_UP_S; if fal lists jobs later than that, raise it, "
                "or a job is paid twice. given_up (red): the history could not be read, so the "
                "request failed as fal_unavailable (or was submitted again after a take-over): "
                "see fal history available and LynxRelayFalHistoryUnavailable.",
                [Target(outcomes, "{{outcome}}")],
                width=8,
                stacked=True,
                overrides=[
                    color("byName", "adopted", GREEN),
                    color("byName", "submitted_again", ORANGE),
                    color("byName", "given_up", RED),
                ],
            ),
            Panel(
                "Time to resolve",
                "From a submit's outcome becoming unknown until it was settled, p50 and p95 "
                "over all replicas; the request waits this long. fal's history may list a job "
                "only once it has ended, and submitted_again takes RELAY_RECONCILE_GIVE_UP_S, "
                "so a p95 near that bound means lost submits are mostly not found.",
                [
                    Target(expr, f"p{round(q * 100)}")
                    for q, expr in quantile_exprs("lynx_relay_reconcile_seconds", (0.5, 0.95))
                ],
                unit="s",
                width=6,
            ),
            Panel(
                "fal history available",
                "1 when every replica can ask fal's request history (min over replicas). Red: "
                "a replica has it off (RELAY_FAL_HISTORY=false, or FAL_KEY unset with a remote "
                "FAL_API_URL) or fal refuses it (401/403/404 on history in fal HTTP calls); its "
                "lost submit answers fail as fal_unavailable. See "
                "LynxRelayFalHistoryUnavailable.",
                [Target(f"min(lynx_relay_fal_history_available{sel()})", "available")],
                kind="stat",
                width=4,
                thresholds=[(None, RED), (1, GREEN)],
            ),
        ],
    )


def cost() -> Row:
    video = f"sum({rate('lynx_relay_video_seconds_total')})"
    billed = f"sum({rate('lynx_relay_tenant_billed_units_total')})"
    spend = f"sum({rate(SPEND)})"
    story = [
        (
            "Paid fal submissions",
            "Jobs fal accepted in the time range; each one is paid for.",
            "lynx_relay_fal_submissions_total",
            BLUE,
        ),
        (
            "Duplicates skipped",
            "Requests whose request_id was in flight or finished within the dedupe retention: "
            "no second job, no second event.",
            "lynx_relay_duplicates_total",
            GREEN,
        ),
        (
            "Jobs resumed",
            "Jobs taken up again from the ledger after a restart, rebalance or a peer's death, "
            "instead of being submitted (and paid) again.",
            "lynx_relay_jobs_resumed_total",
            GREEN,
        ),
        (
            "Redeliveries skipped",
            "Records delivered again whose work the ledger shows as done (a crash between "
            "publishing and committing): nothing was done twice.",
            "lynx_relay_redeliveries_skipped_total",
            GREEN,
        ),
    ]
    return Row(
        "Cost and never paying twice",
        [
            Panel(
                "Video seconds delivered and billed",
                "Seconds of video in succeeded results per minute, and the units billed for "
                "finished jobs (seconds of video for Lynx: fal's X-Fal-Billable-Units, or the "
                "estimate where fal sent none). Billed above delivered: fal billed failed jobs "
                "(a 422 may be billed).",
                [
                    Target(f"{video} * 60", "video seconds / min"),
                    Target(f"{billed} * 60", "billed units / min"),
                ],
                width=8,
                overrides=[color("byName", "billed units / min", BLUE, custom_lineStyle=DASHED)],
            ),
            Panel(
                "Spend at the current rate",
                "What finished jobs cost per second (lynx_relay_tenant_spend_dollars_total, all "
                "tenants: billed units times the account's unit price), projected to an hour "
                "and a day. Per tenant: the row Spend and budgets.",
                [
                    Target(f"{spend} * 3600", "$ / hour"),
                    Target(f"{spend} * 86400", "$ / day"),
                ],
                unit="currencyUSD",
                width=8,
            ),
            Panel(
                "Ledger write time (duplicate-submission window)",
                "From fal accepting a job until its ledger entry was acknowledged. Only a "
                "process killed inside this window (SIGKILL, OOM, node loss) can cost a second "
                "submission of one request; it should stay in milliseconds.",
                [
                    Target(expr, f"p{round(q * 100)}")
                    for q, expr in quantile_exprs("lynx_relay_ledger_write_seconds")
                ],
                unit="s",
                width=8,
            ),
            *(
                Panel(
                    title,
                    description,
                    [Target(f"sum(increase({metric}{sel()}[$__range]))", title.lower())],
                    kind="stat",
                    width=6,
                    height=4,
                    decimals=0,
                    thresholds=[(None, tint)],
                )
                for title, description, metric, tint in story
            ),
        ],
    )


def spend() -> Row:
    """What each tenant spends and its budgets (issue 14; README "What each video costs, and
    budgets"). The spend and budget gauges come from the shared ledger, the same on every
    replica: max() across them. They exist only when the tenants file sets a budget (a
    tenant's or the group's)."""
    month = sel('period="month"')
    month_spend = f"max by (tenant) (lynx_relay_spend_period_dollars{month})"
    # Spend per second over the last 6 hours, per tenant and for the group (tenant="all",
    # as the gauges name it), continued to the end of the UTC month: the seconds from now to
    # the next month's first midnight (Unix time has no leap seconds, so time() % 86400 is
    # the seconds since today's UTC midnight).
    recent = rate(SPEND, window="6h")
    recent_rate = (
        f'sum by (tenant) ({recent}) or label_replace(sum({recent}), "tenant", "all", "", "")'
    )
    seconds_left = "scalar(86400 * (days_in_month() - day_of_month() + 1) - time() % 86400)"
    projected = f"{month_spend} + on (tenant) ({recent_rate}) * {seconds_left} or {month_spend}"
    return Row(
        "Spend and budgets",
        [
            Panel(
                "Spend per tenant / hour",
                "What each tenant's finished jobs cost, in dollars per hour at the current "
                "rate, stacked (the top is the whole account). A job counts when it finishes: "
                "fal's billed units times the unit price, a failed or cancelled job what fal "
                "billed for it.",
                [Target(f"sum by (tenant) ({rate(SPEND)}) * 3600", "{{tenant}}")],
                unit="currencyUSD",
                stacked=True,
            ),
            Panel(
                "Spend this month per tenant",
                "What finished jobs cost since the UTC month began, per tenant (all, dashed: "
                "every tenant together), from the job ledger: what budgets are judged by, "
                "kept across restarts. Only with a budget in RELAY_TENANTS_FILE; tenants the "
                "file does not name (other) have no line of their own.",
                [Target(month_spend, "{{tenant}}")],
                unit="currencyUSD",
                decimals=2,
                overrides=[color("byName", "all", GREY, custom_lineStyle=DASHED)],
            ),
            Panel(
                "Budget used",
                "Spend in the current UTC day and month over the budget, per tenant and "
                "period (all: the group's budget); only tenants with a budget. At 80 % "
                "LynxRelayBudget80Percent fires. At 100 %, or earlier while jobs in flight "
                "(at their expected cost) make up the rest, the tenant is at its line: hold "
                "keeps its requests waiting, reject fails them with budget_exceeded "
                "(LynxRelayBudgetReached).",
                [
                    Target(
                        f"max by (tenant, period) (lynx_relay_spend_period_dollars{sel()}) "
                        f"/ max by (tenant, period) (lynx_relay_budget_dollars{sel()})",
                        "{{tenant}} {{period}}",
                    ),
                    Target("vector(0.8)", "alert: 80 %"),
                    Target("vector(1)", "budget line"),
                ],
                unit="percentunit",
                overrides=[
                    color("byName", "alert: 80 %", ORANGE, custom_lineStyle=DASHED),
                    color("byName", "budget line", RED, custom_lineStyle=DASHED),
                ],
            ),
            Panel(
                "Projected month-end spend",
                "This month's spend plus the last 6 hours' spend rate continued to the end "
                "of the UTC month, per tenant (all: the group). A straight line from the "
                "last 6 hours only: a quiet night projects low, a busy afternoon high. "
                "Dashed: the monthly budgets. A tenant held at its budget spends nothing "
                "more, whatever the projection says.",
                [
                    Target(projected, "{{tenant}}"),
                    Target(
                        f"max by (tenant) (lynx_relay_budget_dollars{month})",
                        "{{tenant}} budget",
                    ),
                ],
                unit="currencyUSD",
                width=12,
                decimals=2,
                overrides=[color("byRegexp", ".* budget", RED, custom_lineStyle=DASHED)],
            ),
            Panel(
                "Tenants at a budget line",
                "Tenants at a budget line now, counting jobs in flight at their expected "
                "cost (all, the group as a whole, counts as one: at its line every tenant "
                "waits). Their requests wait unsubmitted (hold) or fail with budget_exceeded "
                "(reject) until the period turns or the budget is raised. No data: no budget "
                "in RELAY_TENANTS_FILE. See LynxRelayBudgetReached.",
                [
                    Target(
                        f"sum(max by (tenant) (lynx_relay_budget_reached{sel()}))",
                        "at a budget line",
                    )
                ],
                kind="stat",
                width=6,
                decimals=0,
                thresholds=[(None, GREEN), (1, ORANGE)],
            ),
            Panel(
                "Unit price",
                "The price of one billed unit (a second of video for Lynx) in force: fal's "
                "pricing API, read at start and hourly, or RELAY_PRICE_PER_VIDEO_SECOND while "
                "it cannot be read. The highest over replicas (one may not have refreshed yet).",
                [
                    Target(
                        f"max(lynx_relay_price_per_video_second_dollars{sel()})",
                        "$ / unit",
                    )
                ],
                unit="currencyUSD",
                kind="stat",
                width=6,
                decimals=3,
                thresholds=[(None, BLUE)],
            ),
        ],
    )


def tenants() -> Row:
    """The fal account shared by tenants (README "Sharing one fal account"). Tenant labels
    are the tenants file's names, default and other, so the legends stay few."""
    waits = [
        Target(
            f"histogram_quantile({q}, sum by (tenant, le) "
            f"({rate('lynx_relay_tenant_wait_seconds_bucket')}))",
            f"{{{{tenant}}}} p{round(q * 100)}",
        )
        for q in (0.5, 0.95)
    ]
    return Row(
        "Tenants",
        [
            Panel(
                "Waiting per tenant",
                "Requests in the replicas' backlogs waiting for a fal slot, by tenant. A "
                "tenant that keeps waiting while nothing of it starts is starved (see "
                "LynxRelayTenantStarved).",
                [
                    Target(
                        f"sum by (tenant) (lynx_relay_tenant_waiting{sel()})",
                        "{{tenant}}",
                    )
                ],
                stacked=True,
            ),
            Panel(
                "Running per tenant",
                "Jobs the replicas hold by tenant (submitting, at fal, or publishing). A "
                "tenant's max_concurrent applies per replica.",
                [
                    Target(
                        f"sum by (tenant) (lynx_relay_tenant_running{sel()})",
                        "{{tenant}}",
                    )
                ],
                stacked=True,
            ),
            Panel(
                "Starts per tenant / s",
                "Jobs taken from the backlog to be submitted, by tenant. Over time the shares "
                "follow the tenants' weights by cost (video seconds times pixels), not by "
                "count.",
                [
                    Target(
                        f"sum by (tenant) ({rate('lynx_relay_tenant_starts_total')})",
                        "{{tenant}}",
                    )
                ],
                unit="ops",
                stacked=True,
            ),
            Panel(
                "Backlog wait per tenant",
                "Time a request waited in the backlog before it started, p50 and p95 by tenant, "
                "over all replicas. Priority aging (RELAY_PRIORITY_AGING_S) bounds it for "
                "lower classes while slots keep freeing.",
                waits,
                unit="s",
                width=12,
            ),
            Panel(
                "Fleet share vs the account's cap",
                "Jobs the replicas may have at fal, summed (each replica's share of "
                "RELAY_FAL_CONCURRENCY by the partitions it owns, or RELAY_MAX_IN_FLIGHT "
                "without a cap), against the jobs they have and the cap (0: no cap). With a "
                "cap the sum stays within the cap plus one per replica beyond the first.",
                [
                    Target(f"sum(lynx_relay_fleet_share{sel()})", "fleet share"),
                    Target(f"sum(lynx_relay_jobs_in_flight{sel()})", "in flight"),
                    Target(f"max(lynx_relay_fal_concurrency{sel()})", "cap"),
                ],
                width=12,
                overrides=[color("byName", "fleet share", RED, custom_lineStyle=DASHED)],
            ),
        ],
    )


def process() -> Row:
    return Row(
        "Process",
        [
            Panel(
                "CPU",
                "CPU seconds per second of each replica's process (1 = one core).",
                [
                    Target(
                        f"sum by (instance) ({rate('process_cpu_seconds_total')})",
                        "{{instance}}",
                    )
                ],
                width=12,
                height=7,
            ),
            Panel(
                "Memory (resident)",
                "Resident memory of each replica's process. The relay keeps the ledger view "
                "(one small entry per request_id within the dedupe retention) in memory.",
                [
                    Target(
                        f"sum by (instance) (process_resident_memory_bytes{sel()})",
                        "{{instance}}",
                    )
                ],
                unit="bytes",
                width=12,
                height=7,
            ),
        ],
    )


def rows() -> list[Row]:
    return [
        overview(),
        traffic(),
        jobs(),
        tenants(),
        kafka(),
        fal(),
        lost_answers(),
        cost(),
        spend(),
        process(),
    ]


# --------------------------------------------------------------------------------- JSON


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> Json:
    steps = [{"color": c, "value": v} for v, c in panel.thresholds]
    defaults: Json = {
        "unit": panel.unit,
        "color": {"mode": "thresholds" if panel.kind == "stat" else "palette-classic"},
        "thresholds": {"mode": "absolute", "steps": steps},
    }
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    options: Json
    if panel.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
            "orientation": "auto",
        }
    else:
        defaults["min"] = 0
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "axisSoftMin": 0,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
        }
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": panel.overrides},
        "options": options,
        "targets": [
            {
                "datasource": DATASOURCE,
                "refId": chr(ord("A") + i),
                "expr": t.expr,
                "legendFormat": t.legend,
                "range": True,
                "instant": False,
            }
            for i, t in enumerate(panel.targets)
        ],
    }


def layout(all_rows: Iterable[Row]) -> list[Json]:
    """Rows become Grafana row panels; their panels flow left to right and wrap at 24."""
    out: list[Json] = []
    next_id = 1
    y = 0
    for row in all_rows:
        out.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            out.append(panel_json(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return out


def query_variable(name: str, label: str, query: str, all_value: str | None) -> Json:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,  # on time range change: replicas come and go
        "includeAll": True,
        "multi": True,
        "allValue": all_value,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
        "options": [],
        "regex": "",
    }


def build() -> Json:
    """The whole dashboard as a JSON-ready dict."""
    return {
        "uid": UID,
        "title": TITLE,
        "description": "Kafka requests -> fal.ai Lynx video jobs -> Kafka result events. "
        "Generated by dashboards/generate.py; edit the generator, not this file.",
        "tags": ["lynx-relay", "kafka", "fal"],
        "editable": True,
        "graphTooltip": 1,  # shared crosshair: line up lag, in-flight and fal errors in time
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                },
                # Without Kubernetes there is no namespace label: ".*" matches its absence too.
                query_variable(
                    "namespace",
                    "Namespace",
                    "label_values(lynx_relay_max_in_flight, namespace)",
                    ".*",
                ),
                # No custom "All" value: Grafana's default (every listed job) keeps "All" from
                # matching other jobs' `up` series.
                query_variable(
                    "job",
                    "Job",
                    'label_values(lynx_relay_max_in_flight{namespace=~"$namespace"}, job)',
                    None,
                ),
            ]
        },
        "panels": layout(rows()),
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run dashboards/generate.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
