"""Every Prometheus metric of the relay, with help text and bounded labels.

Labels take values from small fixed sets (a reason, a status, an error code, an endpoint
kind, a status class), never a request id. Each ``RelayMetrics`` has its own registry so
several relays can run in one process (the integration tests do).
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from service.decoding import RejectReason
from service.messages import ERROR_CODES

_JOB_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300, 600, 1200, 1800, 3600)


class RelayMetrics:
    def __init__(self, price_per_video_second: float = 0.60) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # CPU, memory and file descriptors of the process, Python's version: for the dashboard.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        p = "lynx_relay_"
        self.video_seconds = Counter(
            p + "video_seconds",
            "Seconds of video delivered in succeeded results (what fal bills for).",
            registry=r,
        )
        self.price_per_video_second = Gauge(
            p + "price_per_video_second_dollars",
            "The unit price in force (per second of video): fal's pricing API's, or "
            "RELAY_PRICE_PER_VIDEO_SECOND until it answers.",
            registry=r,
        )
        self.price_per_video_second.set(price_per_video_second)
        self.requests_consumed = Counter(
            p + "requests_consumed", "Messages taken from the requests topic.", registry=r
        )
        self.requests_rejected = Counter(
            p + "requests_rejected",
            "Messages that could not be accepted and went to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            p + "duplicates",
            "Requests whose request_id was in flight or recently finished; no job was started.",
            registry=r,
        )
        self.fal_submissions = Counter(
            p + "fal_submissions", "Jobs fal accepted (each one is paid for).", registry=r
        )
        self.results = Counter(
            p + "results",
            "Result events published, by status and error code ('none' on success).",
            ["status", "error_code"],
            registry=r,
        )
        self.dead_letters = Counter(
            p + "dead_letters", "Messages copied to the dead-letter topic.", registry=r
        )
        self.jobs_in_flight = Gauge(
            p + "jobs_in_flight",
            "fal jobs submitted (or being submitted) and not finished.",
            registry=r,
        )
        self.max_in_flight = Gauge(
            p + "max_in_flight", "The in-flight limit (RELAY_MAX_IN_FLIGHT).", registry=r
        )
        self.partitions_paused = Gauge(
            p + "partitions_paused", "1 while intake is paused at a limit, else 0.", registry=r
        )
        self.queue_wait = Histogram(
            p + "job_queue_wait_seconds",
            "Time from submit until fal reported the job running.",
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.run_time = Histogram(
            p + "job_run_seconds",
            "Time from fal reporting the job running until it completed.",
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            p + "job_end_to_end_seconds",
            "Time from receiving a request until its result event was acknowledged.",
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.fal_http = Counter(
            p + "fal_http_requests",
            "HTTP calls to fal by endpoint (submit/status/stream/result/cancel, and history for "
            "the Platform API's request history) and status class.",
            ["endpoint", "status_class"],
            registry=r,
        )
        self.commits = Counter(p + "commits", "Offset commits that succeeded.", registry=r)
        self.commit_failures = Counter(
            p + "commit_failures", "Offset commits that failed (retried later).", registry=r
        )
        self.publish_failures = Counter(
            p + "publish_failures",
            "Writes to Kafka (results, dead letters, ledger) that failed and were retried.",
            ["topic_kind"],
            registry=r,
        )
        self.jobs_resumed = Counter(
            p + "jobs_resumed",
            "Jobs taken up again from the ledger (after a restart, rebalance or a peer's death) "
            "instead of being submitted again.",
            registry=r,
        )
        self.redeliveries_skipped = Counter(
            p + "redeliveries_skipped",
            "Records delivered again whose work the ledger shows as done (e.g. after a crash "
            "between publishing and committing); nothing was done twice.",
            registry=r,
        )
        self.ledger_entries = Gauge(
            p + "ledger_entries",
            "Entries in this replica's view of the job ledger, by state.",
            ["state"],
            registry=r,
        )
        self.ledger_write_seconds = Histogram(
            p + "ledger_write_seconds",
            "Time from fal accepting a job until its ledger entry was acknowledged: the window "
            "in which a crash could still cost a second submission.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.consumer_lag = Gauge(
            p + "consumer_lag_records",
            "Records of a requests partition not yet finished and committed (high watermark "
            "minus committed offset), per assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.kafka_writes_failing = Gauge(
            p + "kafka_writes_failing",
            "1 while writes of this kind (results, dead_letter, ledger) keep failing: nothing is "
            "committed past them and /readyz is red.",
            ["topic_kind"],
            registry=r,
        )
        self.fal_key_refused = Gauge(
            p + "fal_key_refused",
            "1 while fal refuses the key (401/403): intake is paused and /readyz is red.",
            registry=r,
        )
        self.rebalances = Counter(
            p + "rebalances", "Partition assignment changes seen by this replica.", registry=r
        )
        # Tenants: label values are the tenants named in RELAY_TENANTS_FILE, default and other.
        self.tenant_waiting = Gauge(
            p + "tenant_waiting",
            "Requests of the tenant waiting in this replica's backlog for a fal slot.",
            ["tenant"],
            registry=r,
        )
        self.tenant_running = Gauge(
            p + "tenant_running",
            "Jobs of the tenant this replica holds (submitting, at fal, or publishing).",
            ["tenant"],
            registry=r,
        )
        self.tenant_starts = Counter(
            p + "tenant_starts",
            "Jobs of the tenant started (taken from the backlog to be submitted).",
            ["tenant"],
            registry=r,
        )
        self.tenant_wait = Histogram(
            p + "tenant_wait_seconds",
            "Seconds a request of the tenant waited in the backlog before it started.",
            ["tenant"],
            buckets=(0.01, 0.1, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=r,
        )
        self.fal_concurrency = Gauge(
            p + "fal_concurrency",
            "RELAY_FAL_CONCURRENCY: the fal account's concurrency shared by the group (0: no cap).",
            registry=r,
        )
        self.fleet_share = Gauge(
            p + "fleet_share",
            "Jobs this replica may have at fal: RELAY_MAX_IN_FLIGHT, or its share of "
            "RELAY_FAL_CONCURRENCY by the partitions it owns.",
            registry=r,
        )
        self.tenant_spend = Counter(
            p + "tenant_spend_dollars",
            "What the tenant's finished jobs cost: fal's billed units (or, without them, the "
            "estimate from num_frames / frames_per_second) times the account's unit price.",
            ["tenant"],
            registry=r,
        )
        self.tenant_billed_units = Counter(
            p + "tenant_billed_units",
            "Units fal billed for the tenant's finished jobs (seconds of video for Lynx).",
            ["tenant"],
            registry=r,
        )
        # Budgets (RELAY_TENANTS_FILE): every replica follows the whole ledger, so each reports
        # the group's spend; take max() across replicas. tenant="all" is the group.
        self.spend_period = Gauge(
            p + "spend_period_dollars",
            "What finished jobs cost in the current UTC day or month, per tenant (all: the "
            "group), from the job ledger; the same on every replica.",
            ["tenant", "period"],
            registry=r,
        )
        self.budget = Gauge(
            p + "budget_dollars",
            "The tenant's budget per UTC day or month from RELAY_TENANTS_FILE (all: the group's); "
            "absent when it has none.",
            ["tenant", "period"],
            registry=r,
        )
        self.budget_reached = Gauge(
            p + "budget_reached",
            "1 while the tenant (all: the group) is at a budget line, counting jobs in flight: "
            "its requests wait (hold) or are refused with budget_exceeded (reject).",
            ["tenant"],
            registry=r,
        )
        # Submits whose answer was lost, settled with fal's request history (issue 13).
        self.reconciliations_started = Counter(
            p + "reconciliations_started",
            "Submits whose outcome was unknown (an answer lost, or a process gone between fal's "
            "answer and the ledger's) that were looked for in fal's request history.",
            registry=r,
        )
        self.reconciliations = Counter(
            p + "reconciliations",
            "How reconciliations ended: adopted (fal had the job: watched, not paid again), "
            "submitted_again (not in the history past RELAY_RECONCILE_GIVE_UP_S), given_up (the "
            "history could not be read: failed as fal_unavailable, or submitted again after a "
            "take-over, as without a history).",
            ["outcome"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            p + "reconcile_seconds",
            "Seconds from a submit's outcome becoming unknown until it was settled.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
            registry=r,
        )
        self.fal_history_available = Gauge(
            p + "fal_history_available",
            "1 while fal's request history can settle lost submit answers; 0 when it is off or "
            "refused (RELAY_FAL_HISTORY, or 401/403/404 there): such submits then fail as "
            "fal_unavailable.",
            registry=r,
        )
        self._output_metrics(r, p)
        zero_series(self)

    def _output_metrics(self, r: CollectorRegistry, p: str) -> None:
        """Output storage (RELAY_OUTPUT_URL) and fal's copies."""
        self.output_copies = Counter(
            p + "output_copies",
            "Copies of videos to output storage (RELAY_OUTPUT_URL): stored (verified), retried "
            "(an attempt failed, tried again), failed (given up: storage_failed), kept_fal_url "
            "(given up, fal's URL published: RELAY_OUTPUT_ON_FAILURE=fal_url).",
            ["outcome"],
            registry=r,
        )
        self.output_copies_running = Gauge(
            p + "output_copies_running",
            "Copies streaming now (at most RELAY_OUTPUT_MAX_COPIES).",
            registry=r,
        )
        self.output_bytes = Counter(
            p + "output_bytes", "Bytes of video copied to output storage and verified.", registry=r
        )
        self.output_copy_seconds = Histogram(
            p + "output_copy_seconds",
            "Seconds from a job's end at fal until its video was stored, retries included.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.fal_payload_deletes = Counter(
            p + "fal_payload_deletes",
            "fal's copies deleted after a verified copy (RELAY_FAL_DELETE_AFTER_COPY): deleted, "
            "failed (left to their lifetime).",
            ["outcome"],
            registry=r,
        )


# Label values, from the vocabularies they name (so a new reason or code has a series at once).
REJECT_REASONS: tuple[str, ...] = get_args(RejectReason)
RESULT_SERIES = (
    ("succeeded", "none"),
    *(("failed", code) for code in ERROR_CODES if code != "cancelled"),
    ("cancelled", "cancelled"),
)


FAL_ENDPOINTS = (
    "submit",
    "status",
    "stream",
    "result",
    "cancel",
    "history",
    "pricing",
    "file",
    "payloads",
)
STATUS_CLASSES = ("2xx", "4xx", "5xx", "error")
TOPIC_KINDS = ("results", "dead_letter", "ledger")
RECONCILE_OUTCOMES = ("adopted", "submitted_again", "given_up")
COPY_OUTCOMES = ("stored", "retried", "failed", "kept_fal_url")


def zero_series(metrics: RelayMetrics) -> None:
    """Create every labelled series at 0, so rate() and increase() see the first event of
    each (a series that appears at 1 has no increase to show)."""
    for reason in REJECT_REASONS:
        metrics.requests_rejected.labels(reason)
    for status, code in RESULT_SERIES:
        metrics.results.labels(status, code)
    for endpoint in FAL_ENDPOINTS:
        for cls in STATUS_CLASSES:
            metrics.fal_http.labels(endpoint, cls)
    for outcome in RECONCILE_OUTCOMES:
        metrics.reconciliations.labels(outcome)
    for outcome in COPY_OUTCOMES:
        metrics.output_copies.labels(outcome)
    for outcome in ("deleted", "failed"):
        metrics.fal_payload_deletes.labels(outcome)
    for kind in TOPIC_KINDS:
        metrics.publish_failures.labels(kind)
        metrics.kafka_writes_failing.labels(kind).set(0)


def status_class(status: int | None) -> str:
    """'2xx' .. '5xx', or 'error' when no response came back (transport failure)."""
    if status is None:
        return "error"
    return f"{status // 100}xx"
