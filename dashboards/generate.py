"""Generate the relay's Grafana dashboard with the Grafana Foundation SDK.

``uv run python dashboards/generate.py`` rewrites ``helm/lynx-relay/files/dashboard.json``;
``--check`` only compares (exit 1 when the checked-in file is stale). The Helm chart ships that
file in a ConfigMap for Grafana's dashboard sidecar, so the JSON is self-contained: the
datasource is a template variable (``${datasource}``), not an import-time input.

Every query filters on ``namespace=~"$namespace", job=~"$job"``: in Kubernetes (Prometheus
Operator) each release is one job in one namespace; outside it the namespace label is absent,
and ``=~".*"`` (the namespace variable's "All") also matches series without it.

The SDK's builder places the panels: a row starts a new line and panels flow left to right. It
starts the next line only when the widths reach 24 (it does not wrap a panel that does not fit),
so the panels of a full line must add up to exactly 24; tests/observability/test_dashboard.py
fails on a panel past the right edge. Panel ids and query refIds are numbered at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "helm" / "lynx-relay" / "files" / "dashboard.json"

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
QUANTILES = (0.5, 0.95, 0.99)
# What finished jobs cost, per tenant and replica (issue 14): the spend panels' counter.
SPEND = "lynx_relay_tenant_spend_dollars_total"
# Failures that count against the SLO: not invalid_request (the caller's fault) and not
# budget_exceeded (a tenant's budget working as configured).
JUDGED = 'error_code!~"invalid_request|budget_exceeded"'

RED, ORANGE, GREEN, BLUE, GREY = "red", "orange", "green", "blue", "text"

PanelBuilder = Builder[dm.Panel]
Query = Builder[Dataquery]
Row = tuple[str, list[PanelBuilder]]


# --------------------------------------------------------------------------------- PromQL


def sel(*matchers: str) -> str:
    """The dashboard's label filter plus ``matchers``, as a PromQL selector body."""
    return "{" + ", ".join(['namespace=~"$namespace"', 'job=~"$job"', *matchers]) + "}"


def rate(metric: str, *matchers: str, window: str = RATE) -> str:
    return f"rate({metric}{sel(*matchers)}[{window}])"


def zero_if_none(expr: str) -> str:
    """A labelled failure counter has no series until its first failure; show 0, not
    "No data", so "no failures" and "no metrics" look different on the dashboard."""
    return f"{expr} or on() vector(0)"


def query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().datasource(DATASOURCE).expr(expr).legend_format(legend).range()


def quantiles(
    metric: str, legend: str = "", qs: Sequence[float] = QUANTILES, by: str = ""
) -> list[Query]:
    """p50/p95/p99 (or ``qs``) of a histogram across replicas: buckets are summed (per ``by``
    label, if any) before the quantile. Legends are ``legend`` plus "p50" and so on."""
    labels = f"{by}, le" if by else "le"
    return [
        query(
            f"histogram_quantile({q}, sum by ({labels}) ({rate(metric + '_bucket')}))",
            f"{legend}p{round(q * 100)}",
        )
        for q in qs
    ]


# --------------------------------------------------------------------------------- panel kinds


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    """Threshold steps as (from value, color); the first starts at None (minus infinity)."""
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in pairs])
    )


def paint(
    color: str, dashed: bool = False, width: int | None = None
) -> list[dm.DynamicConfigValue]:
    """Override properties: a fixed series color, optionally a dashed or thicker line."""
    fixed = dm.FieldColor(mode=dm.FieldColorModeId.FIXED, fixed_color=color)
    props = [dm.DynamicConfigValue(id_val="color", value=fixed)]
    if dashed:
        style = cm.LineStyle(fill="dash", dash=[10, 10])
        props.append(dm.DynamicConfigValue(id_val="custom.lineStyle", value=style))
    if width is not None:
        props.append(dm.DynamicConfigValue(id_val="custom.lineWidth", value=width))
    return props


def graph(
    title: str,
    description: str,
    *targets: Query,
    unit: str = "short",
    stacked: bool = False,
) -> timeseries.Panel:
    """A time series, 8x8 unless resized; the y axis starts at 0 (every series here is a
    count, rate, share or duration) and the tooltip lists all series, largest first."""
    stacking = cm.StackingMode.NORMAL if stacked else cm.StackingMode.NONE
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .unit(unit)
        .span(8)
        .height(8)
        .min(0)
        .axis_soft_min(0)
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC))
        .thresholds(steps((None, GREEN)))
        .draw_style(cm.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(10)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(cb.StackingConfig().mode(stacking).group("A"))
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)
        )
    )


def number(title: str, description: str, target: Query, unit: str = "short") -> stat.Panel:
    """A stat: the last value, colored by its thresholds (green unless set), over a
    sparkline; 8x8 unless resized."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets([target])
        .unit(unit)
        .span(8)
        .height(8)
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .thresholds(steps((None, GREEN)))
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .justify_mode(cm.BigValueJustifyMode.AUTO)
        .text_mode(cm.BigValueTextMode.AUTO)
        .orientation(cm.VizOrientation.AUTO)
    )


# --------------------------------------------------------------------------------- rows


def overview() -> Row:
    failed = rate("lynx_relay_results_total", 'status="failed"', JUDGED, window="$__range")
    judged = rate("lynx_relay_results_total", JUDGED, window="$__range")
    return "Overview", [
        number(
            "Replicas up",
            "Relay targets Prometheus scrapes successfully (up == 1). 0 means the relay is "
            "down or not scraped: see the LynxRelayDown alert.",
            query(f"sum(up{sel()})", "up"),
        )
        .span(4)
        .height(4)
        .thresholds(steps((None, RED), (1, GREEN))),
        number(
            "Requests in",
            "Messages taken from the requests topic per second, all replicas.",
            query(f"sum({rate('lynx_relay_requests_consumed_total')})", "requests/s"),
            unit="reqps",
        )
        .span(4)
        .height(4),
        number(
            "Jobs in flight",
            "fal jobs submitted and not finished, all replicas.",
            query(f"sum(lynx_relay_jobs_in_flight{sel()})", "in flight"),
        )
        .span(4)
        .height(4),
        number(
            "Consumer lag",
            "Request records not yet finished and committed, all partitions.",
            query(f"sum(lynx_relay_consumer_lag_records{sel()})", "records"),
        )
        .span(4)
        .height(4)
        .thresholds(steps((None, GREEN), (100, ORANGE), (1000, RED))),
        number(
            "Failed results (time range)",
            "Share of result events that failed over the dashboard's time range, not "
            "counting invalid_request (the caller's fault). The error-ratio alert's SLO "
            "is 99 % succeeded.",
            query(f"sum({failed}) / sum({judged})", "failed"),
            unit="percentunit",
        )
        .span(4)
        .height(4)
        .decimals(1)
        .thresholds(steps((None, GREEN), (0.01, ORANGE), (0.06, RED))),
        number(
            "Spend (time range)",
            "What the jobs that finished in the time range cost, all tenants: fal's "
            "billed units times the account's unit price (estimated from num_frames / "
            "frames_per_second where fal gave no units). See the row Spend and budgets.",
            query(f"sum(increase({SPEND}{sel()}[$__range]))", "spend"),
            unit="currencyUSD",
        )
        .span(4)
        .height(4)
        .decimals(2)
        .thresholds(steps((None, BLUE))),
    ]


def traffic() -> Row:
    failed = rate("lynx_relay_results_total", 'status="failed"', JUDGED)
    judged = rate("lynx_relay_results_total", JUDGED)
    return "Requests and results", [
        graph(
            "Requests in / s",
            "Messages consumed from the requests topic, and the share that were "
            "duplicates of a request in flight or recently finished (no job started).",
            query(f"sum({rate('lynx_relay_requests_consumed_total')})", "consumed"),
            query(f"sum({rate('lynx_relay_duplicates_total')})", "duplicates"),
            unit="reqps",
        ).override_by_name("duplicates", paint(GREY)),
        graph(
            "Results by status and error code",
            "Result events published per second. Failures are red; invalid_request is the "
            "caller's fault (validation), the other codes are ours or fal's.",
            query(
                f"sum by (status, error_code) ({rate('lynx_relay_results_total')})",
                "{{status}} {{error_code}}",
            ),
            unit="reqps",
            stacked=True,
        )
        .override_by_regexp("succeeded.*", paint(GREEN))
        .override_by_regexp("failed invalid_request", paint(ORANGE))
        .override_by_regexp("failed (?!invalid_request).*", paint(RED))
        .override_by_regexp("cancelled.*", paint(GREY)),
        graph(
            "Error ratio (SLO 99 % succeeded)",
            "Failed results over all results, without invalid_request. The dashed lines "
            "are the error-ratio alert's burn-rate thresholds (14.4x and 6x a 1 % budget).",
            query(f"sum({failed}) / sum({judged})", "failed share"),
            query("vector(0.144)", "page: 14.4x burn"),
            query("vector(0.06)", "ticket: 6x burn"),
            unit="percentunit",
        )
        .override_by_name("failed share", paint(RED))
        .override_by_regexp("page.*", paint(ORANGE, dashed=True))
        .override_by_regexp("ticket.*", paint(GREY, dashed=True)),
    ]


def jobs() -> Row:
    return "Jobs and latency", [
        graph(
            "Jobs in flight vs the limit",
            "fal jobs submitted and not finished, against RELAY_MAX_IN_FLIGHT summed over "
            "replicas. At the limit the relay pauses its partitions (paused replicas); a "
            "replica that took over a dead peer's jobs may be above it for a while.",
            query(f"sum(lynx_relay_jobs_in_flight{sel()})", "in flight"),
            query(f"sum(lynx_relay_max_in_flight{sel()})", "limit"),
            query(f"sum(lynx_relay_partitions_paused{sel()})", "replicas paused"),
        )
        .override_by_name("limit", paint(RED, dashed=True))
        .override_by_name("replicas paused", paint(ORANGE)),
        graph(
            "fal queue wait vs run time",
            "Queue wait: submit until fal reported the job running (fal's capacity). Run "
            "time: running until completed (the model). Quantiles over all replicas.",
            *quantiles("lynx_relay_job_queue_wait_seconds", "queue wait "),
            *quantiles("lynx_relay_job_run_seconds", "run time "),
            unit="s",
        )
        .override_by_regexp("queue wait.*", paint(ORANGE))
        .override_by_regexp("run time.*", paint(BLUE)),
        graph(
            "End-to-end latency",
            "From receiving a request until its result event was acknowledged by Kafka.",
            *quantiles("lynx_relay_job_end_to_end_seconds"),
            unit="s",
        ),
    ]


def tenants() -> Row:
    """The fal account shared by tenants (README "Sharing one fal account"). Tenant labels
    are the tenants file's names, default and other, so the legends stay few."""
    return "Tenants", [
        graph(
            "Waiting per tenant",
            "Requests in the replicas' backlogs waiting for a fal slot, by tenant. A "
            "tenant that keeps waiting while nothing of it starts is starved (see "
            "LynxRelayTenantStarved).",
            query(f"sum by (tenant) (lynx_relay_tenant_waiting{sel()})", "{{tenant}}"),
            stacked=True,
        ),
        graph(
            "Running per tenant",
            "Jobs the replicas hold by tenant (submitting, at fal, or publishing). A "
            "tenant's max_concurrent applies per replica.",
            query(f"sum by (tenant) (lynx_relay_tenant_running{sel()})", "{{tenant}}"),
            stacked=True,
        ),
        graph(
            "Starts per tenant / s",
            "Jobs taken from the backlog to be submitted, by tenant. Over time the shares "
            "follow the tenants' weights by cost (video seconds times pixels), not by "
            "count.",
            query(f"sum by (tenant) ({rate('lynx_relay_tenant_starts_total')})", "{{tenant}}"),
            unit="ops",
            stacked=True,
        ),
        graph(
            "Backlog wait per tenant",
            "Time a request waited in the backlog before it started, p50 and p95 by tenant, "
            "over all replicas. Priority aging (RELAY_PRIORITY_AGING_S) bounds it for "
            "lower classes while slots keep freeing.",
            *quantiles("lynx_relay_tenant_wait_seconds", "{{tenant}} ", (0.5, 0.95), by="tenant"),
            unit="s",
        ).span(12),
        graph(
            "Fleet share vs the account's cap",
            "Jobs the replicas may have at fal, summed (each replica's share of "
            "RELAY_FAL_CONCURRENCY by the partitions it owns, or RELAY_MAX_IN_FLIGHT "
            "without a cap), against the jobs they have and the cap (0: no cap). With a "
            "cap the sum stays within the cap plus one per replica beyond the first.",
            query(f"sum(lynx_relay_fleet_share{sel()})", "fleet share"),
            query(f"sum(lynx_relay_jobs_in_flight{sel()})", "in flight"),
            query(f"max(lynx_relay_fal_concurrency{sel()})", "cap"),
        )
        .span(12)
        .override_by_name("fleet share", paint(RED, dashed=True)),
    ]


def kafka() -> Row:
    publish_failures = f"sum by (topic_kind) ({rate('lynx_relay_publish_failures_total')})"
    rebalances = f"increase(lynx_relay_rebalances_total{sel()}[{RATE}])"
    return "Kafka", [
        graph(
            "Consumer lag per partition",
            "Records of each requests partition not yet finished and committed (high "
            "watermark minus committed offset), as seen by the replica that owns it. "
            "In-flight jobs count: lag above the in-flight limit is work waiting in Kafka.",
            query(
                f"max by (topic, partition) (lynx_relay_consumer_lag_records{sel()})",
                "{{topic}}/{{partition}}",
            ),
        ),
        graph(
            "Dead letters",
            "Messages copied to the dead-letter topic per second, by reason (the "
            "x-relay-error-code header). A spike means a producer sends broken messages.",
            query(f"sum by (reason) ({rate('lynx_relay_requests_rejected_total')})", "{{reason}}"),
            query(f"sum({rate('lynx_relay_dead_letters_total')})", "all dead letters"),
            unit="reqps",
        ).override_by_name("all dead letters", paint(RED)),
        graph(
            "Commits and write failures",
            "Offset commits per second, and commits and Kafka writes (results, dead "
            "letters, ledger) that failed and are being retried. Failures are red.",
            query(f"sum({rate('lynx_relay_commits_total')})", "commits"),
            query(f"sum({rate('lynx_relay_commit_failures_total')})", "commit failures"),
            query(zero_if_none(publish_failures), "write failures {{topic_kind}}"),
            unit="ops",
        )
        .override_by_name("commits", paint(GREEN))
        .override_by_regexp(".*failures.*", paint(RED)),
        graph(
            "Rebalances",
            "Partition assignment changes seen by each replica (assigned and revoked both "
            "count). Bursts outside deploys mean replicas leave the group (crashes, "
            "session timeouts).",
            query(f"sum by (instance) ({rebalances})", "{{instance}}"),
        )
        .span(12)
        .height(7),
        graph(
            "Ledger entries by state",
            "Entries in the job ledger (one per request_id): submitted = at fal now, "
            "finished = remembered for dedupe, rejected = dead-lettered positions.",
            query(f"max by (state) (lynx_relay_ledger_entries{sel()})", "{{state}}"),
        )
        .span(12)
        .height(7),
    ]


def fal() -> Row:
    calls = rate("lynx_relay_fal_http_requests_total")
    errors = rate("lynx_relay_fal_http_requests_total", 'status_class=~"4xx|5xx|error"')
    return "fal", [
        graph(
            "fal HTTP calls by endpoint and status class",
            "Calls to fal's queue API per second. 4xx, 5xx and transport errors (error) "
            "are red and thick; 401/403 fail every job (see LynxRelayFalUnauthorized).",
            query(f"sum by (endpoint, status_class) ({calls})", "{{endpoint}} {{status_class}}"),
            unit="reqps",
        )
        .span(12)
        .override_by_regexp(".* (4xx|5xx|error)", paint(RED, width=3))
        .override_by_regexp(".* 2xx", paint(GREEN)),
        graph(
            "fal HTTP error share",
            "Share of fal calls per endpoint that did not answer 2xx/3xx.",
            query(
                zero_if_none(f"sum by (endpoint) ({errors}) / sum by (endpoint) ({calls})"),
                "errors {{endpoint}}",
            ),
            unit="percentunit",
        ).override_by_regexp(".*", paint(RED)),
        number(
            "fal key refused",
            "Replicas whose fal key is refused (401/403): they pause intake and retry "
            "until fal accepts the key again. Anything above 0 stops all work; see "
            "LynxRelayFalUnauthorized.",
            query(f"sum(lynx_relay_fal_key_refused{sel()})", "replicas"),
        )
        .span(4)
        .thresholds(steps((None, GREEN), (1, RED))),
    ]


def lost_answers() -> Row:
    """Submits whose answer was lost, settled with fal's request history (issue 13; README
    "When a submit's answer is lost")."""
    return "Lost submit answers", [
        graph(
            "Reconciliations started / min",
            "Submits whose outcome was unknown (an answer lost, or a process gone between "
            "fal's answer and the ledger's) that were looked for in fal's request history, "
            "per minute. A steady rate means submit answers get lost: look for submit 5xx "
            "and error in fal HTTP calls.",
            query(
                f"sum({rate('lynx_relay_reconciliations_started_total')}) * 60",
                "started / min",
            ),
        ).span(6),
        graph(
            "Reconciliation outcomes / min",
            "How reconciliations ended, per minute. adopted (green): fal had the job, it "
            "is watched and not paid again. submitted_again (orange): not in fal's history "
            "after RELAY_RECONCILE_GIVE_UP_S; if fal lists jobs later than that, raise it, "
            "or a job is paid twice. given_up (red): the history could not be read, so the "
            "request failed as fal_unavailable (or was submitted again after a take-over): "
            "see fal history available and LynxRelayFalHistoryUnavailable.",
            query(
                f"sum by (outcome) ({rate('lynx_relay_reconciliations_total')}) * 60",
                "{{outcome}}",
            ),
            stacked=True,
        )
        .override_by_name("adopted", paint(GREEN))
        .override_by_name("submitted_again", paint(ORANGE))
        .override_by_name("given_up", paint(RED)),
        graph(
            "Time to resolve",
            "From a submit's outcome becoming unknown until it was settled, p50 and p95 "
            "over all replicas; the request waits this long. fal's history may list a job "
            "only once it has ended, and submitted_again takes RELAY_RECONCILE_GIVE_UP_S, "
            "so a p95 near that bound means lost submits are mostly not found.",
            *quantiles("lynx_relay_reconcile_seconds", qs=(0.5, 0.95)),
            unit="s",
        ).span(6),
        number(
            "fal history available",
            "1 when every replica can ask fal's request history (min over replicas). Red: "
            "a replica has it off (RELAY_FAL_HISTORY=false, or FAL_KEY unset with a remote "
            "FAL_API_URL) or fal refuses it (401/403/404 on history in fal HTTP calls); its "
            "lost submit answers fail as fal_unavailable. See "
            "LynxRelayFalHistoryUnavailable.",
            query(f"min(lynx_relay_fal_history_available{sel()})", "available"),
        )
        .span(4)
        .thresholds(steps((None, RED), (1, GREEN))),
    ]


# What cost is saved by not doing work twice, and what is paid: totals over the time range.
STORY = [
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


def cost() -> Row:
    video = f"sum({rate('lynx_relay_video_seconds_total')})"
    billed = f"sum({rate('lynx_relay_tenant_billed_units_total')})"
    spend = f"sum({rate(SPEND)})"
    return "Cost and never paying twice", [
        graph(
            "Video seconds delivered and billed",
            "Seconds of video in succeeded results per minute, and the units billed for "
            "finished jobs (seconds of video for Lynx: fal's X-Fal-Billable-Units, or the "
            "estimate where fal sent none). Billed above delivered: fal billed failed jobs "
            "(a 422 may be billed).",
            query(f"{video} * 60", "video seconds / min"),
            query(f"{billed} * 60", "billed units / min"),
        ).override_by_name("billed units / min", paint(BLUE, dashed=True)),
        graph(
            "Spend at the current rate",
            "What finished jobs cost per second (lynx_relay_tenant_spend_dollars_total, all "
            "tenants: billed units times the account's unit price), projected to an hour "
            "and a day. Per tenant: the row Spend and budgets.",
            query(f"{spend} * 3600", "$ / hour"),
            query(f"{spend} * 86400", "$ / day"),
            unit="currencyUSD",
        ),
        graph(
            "Ledger write time (duplicate-submission window)",
            "From fal accepting a job until its ledger entry was acknowledged. Only a "
            "process killed inside this window (SIGKILL, OOM, node loss) can cost a second "
            "submission of one request; it should stay in milliseconds.",
            *quantiles("lynx_relay_ledger_write_seconds"),
            unit="s",
        ),
        *(
            number(
                title,
                description,
                query(f"sum(increase({metric}{sel()}[$__range]))", title.lower()),
            )
            .span(6)
            .height(4)
            .decimals(0)
            .thresholds(steps((None, tint)))
            for title, description, metric, tint in STORY
        ),
    ]


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
    used = (
        f"max by (tenant, period) (lynx_relay_spend_period_dollars{sel()}) "
        f"/ max by (tenant, period) (lynx_relay_budget_dollars{sel()})"
    )
    return "Spend and budgets", [
        graph(
            "Spend per tenant / hour",
            "What each tenant's finished jobs cost, in dollars per hour at the current "
            "rate, stacked (the top is the whole account). A job counts when it finishes: "
            "fal's billed units times the unit price, a failed or cancelled job what fal "
            "billed for it.",
            query(f"sum by (tenant) ({rate(SPEND)}) * 3600", "{{tenant}}"),
            unit="currencyUSD",
            stacked=True,
        ),
        graph(
            "Spend this month per tenant",
            "What finished jobs cost since the UTC month began, per tenant (all, dashed: "
            "every tenant together), from the job ledger: what budgets are judged by, "
            "kept across restarts. Only with a budget in RELAY_TENANTS_FILE; tenants the "
            "file does not name (other) have no line of their own.",
            query(month_spend, "{{tenant}}"),
            unit="currencyUSD",
        )
        .decimals(2)
        .override_by_name("all", paint(GREY, dashed=True)),
        graph(
            "Budget used",
            "Spend in the current UTC day and month over the budget, per tenant and "
            "period (all: the group's budget); only tenants with a budget. At 80 % "
            "LynxRelayBudget80Percent fires. At 100 %, or earlier while jobs in flight "
            "(at their expected cost) make up the rest, the tenant is at its line: hold "
            "keeps its requests waiting, reject fails them with budget_exceeded "
            "(LynxRelayBudgetReached).",
            query(used, "{{tenant}} {{period}}"),
            query("vector(0.8)", "alert: 80 %"),
            query("vector(1)", "budget line"),
            unit="percentunit",
        )
        .override_by_name("alert: 80 %", paint(ORANGE, dashed=True))
        .override_by_name("budget line", paint(RED, dashed=True)),
        graph(
            "Projected month-end spend",
            "This month's spend plus the last 6 hours' spend rate continued to the end "
            "of the UTC month, per tenant (all: the group). A straight line from the "
            "last 6 hours only: a quiet night projects low, a busy afternoon high. "
            "Dashed: the monthly budgets. A tenant held at its budget spends nothing "
            "more, whatever the projection says.",
            query(projected, "{{tenant}}"),
            query(f"max by (tenant) (lynx_relay_budget_dollars{month})", "{{tenant}} budget"),
            unit="currencyUSD",
        )
        .span(12)
        .decimals(2)
        .override_by_regexp(".* budget", paint(RED, dashed=True)),
        number(
            "Tenants at a budget line",
            "Tenants at a budget line now, counting jobs in flight at their expected "
            "cost (all, the group as a whole, counts as one: at its line every tenant "
            "waits). Their requests wait unsubmitted (hold) or fail with budget_exceeded "
            "(reject) until the period turns or the budget is raised. No data: no budget "
            "in RELAY_TENANTS_FILE. See LynxRelayBudgetReached.",
            query(f"sum(max by (tenant) (lynx_relay_budget_reached{sel()}))", "at a budget line"),
        )
        .span(6)
        .decimals(0)
        .thresholds(steps((None, GREEN), (1, ORANGE))),
        number(
            "Unit price",
            "The price of one billed unit (a second of video for Lynx) in force: fal's "
            "pricing API, read at start and hourly, or RELAY_PRICE_PER_VIDEO_SECOND while "
            "it cannot be read. The highest over replicas (one may not have refreshed yet).",
            query(f"max(lynx_relay_price_per_video_second_dollars{sel()})", "$ / unit"),
            unit="currencyUSD",
        )
        .span(6)
        .decimals(3)
        .thresholds(steps((None, BLUE))),
    ]


def process() -> Row:
    return "Process", [
        graph(
            "CPU",
            "CPU seconds per second of each replica's process (1 = one core).",
            query(f"sum by (instance) ({rate('process_cpu_seconds_total')})", "{{instance}}"),
        )
        .span(12)
        .height(7),
        graph(
            "Memory (resident)",
            "Resident memory of each replica's process. The relay keeps the ledger view "
            "(one small entry per request_id within the dedupe retention) in memory.",
            query(f"sum by (instance) (process_resident_memory_bytes{sel()})", "{{instance}}"),
            unit="bytes",
        )
        .span(12)
        .height(7),
    ]


ROWS = (overview, traffic, jobs, tenants, kafka, fal, lost_answers, cost, spend, process)


# --------------------------------------------------------------------------------- dashboard


def filter_variable(name: str, label: str, promql: str) -> db.QueryVariable:
    """A multi-value label filter, "All" selected, re-read on time range changes (replicas
    come and go)."""
    return (
        db.QueryVariable(name)
        # Every variable's id is its name: the SDK gives them all the same all-zero id, and
        # Grafana's pre-Scenes templating keys variables by id (by name only without one).
        .id(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": promql, "refId": f"{name}-variable"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .multi(True)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def build() -> dm.Dashboard:
    board = (
        db.Dashboard("lynx-relay")
        .uid("lynx-relay")
        .description(
            "Kafka requests -> fal.ai Lynx video jobs -> Kafka result events. "
            "Generated by dashboards/generate.py; edit the generator, not this file."
        )
        .tags(["lynx-relay", "kafka", "fal"])
        .editable()
        # Shared crosshair: line up lag, in-flight and fal errors in time.
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .version(1)
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("")  # the viewer's preference, not forced to the browser's zone
        .with_variable(
            db.DatasourceVariable("datasource")
            .id("datasource")  # as in filter_variable
            .label("Data source")
            .type("prometheus")
        )
        # Without Kubernetes there is no namespace label: ".*" matches its absence too.
        .with_variable(
            filter_variable(
                "namespace", "Namespace", "label_values(lynx_relay_max_in_flight, namespace)"
            ).all_value(".*")
        )
        # No custom "All" value: Grafana's default (every listed job) keeps "All" from
        # matching other jobs' `up` series.
        .with_variable(
            filter_variable(
                "job", "Job", 'label_values(lynx_relay_max_in_flight{namespace=~"$namespace"}, job)'
            )
        )
    )
    for make_row in ROWS:
        title, panels = make_row()
        board.with_row(db.Row(title))
        for panel in panels:
            board.with_panel(panel)
    model = board.build()
    # Schema 39 as before: the panels are written in its form; the SDK's default (36) would
    # only have Grafana run migrations that change nothing here.
    model.schema_version = 39
    # Grafana needs ids unique in the dashboard and refIds unique in a panel; the SDK leaves
    # both to us. Ids in order (rows included) keep a recorded snapshot's keys stable.
    for panel_id, item in enumerate(model.panels or [], start=1):
        item.id_val = panel_id
        if isinstance(item, dm.Panel):
            for i, target in enumerate(item.targets or []):
                assert isinstance(target, pm.Dataquery)
                target.ref_id = chr(ord("A") + i)
    return model


def render() -> str:
    return json.dumps(build(), cls=JSONEncoder, indent=2) + "\n"


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
