"""What the relay's units are told: limits, timeouts and the watch mode (from the settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from service.core.polling import PollSchedule
from service.decoding import DEFAULT_POLICY, InputPolicy
from service.relay.storage import KeepConfig
from service.tenants import Tenants


@dataclass(frozen=True, slots=True)
class RelayConfig:
    max_in_flight: int
    poll: PollSchedule = field(default_factory=PollSchedule)
    job_timeout: float = 3600.0
    shutdown_grace: float = 10.0
    commit_interval: float = 1.0
    fetch_timeout: float = 0.5
    idle_poll: float = 1.0
    write_backoff: tuple[float, float] = (0.2, 5.0)
    write_stall: float = 10.0
    ledger_expiry_interval: float = 60.0
    watch_mode: Literal["poll", "stream", "webhook"] = "poll"
    webhook_safety_poll: float = 60.0
    webhook_grace: float = 1.0
    input_policy: InputPolicy = DEFAULT_POLICY
    progress: bool = False
    progress_min_interval: float = 1.0
    progress_max_logs: int = 50
    fal_concurrency: int | None = None  # the account's, shared by the group (None: no cap)
    tenants: Tenants = field(default_factory=Tenants)
    backlog_max: int = 100_000
    backlog_body_bytes: int = 8 * 1_048_576
    priority_aging: float = 300.0
    # fal's request history for submits whose answer was lost (``relay.reconcile``): why it is
    # not asked (None: it is), how often it is read, and the bounds.
    history_off: str | None = None
    reconcile_interval: float = 10.0
    reconcile_give_up: float = 1200.0
    reconcile_skew: float = 30.0
    # The price until fal's pricing answers (RELAY_PRICE_PER_VIDEO_SECOND), and how often
    # fal is asked again.
    fallback_unit_price: float = 0.60
    budget_pace: float = 1.0  # a budgeted tenant's starts per replica: one per this long
    price_refresh: float = 3600.0
    output: KeepConfig | None = None  # output storage (RELAY_OUTPUT_URL); None: off

    @property
    def max_unfinished(self) -> int:
        # Waiting requests, plus finished jobs whose results are not yet acknowledged: up to
        # one more limit's worth before intake stops, enough to keep fal busy while Kafka
        # acks, and bounded.
        return self.backlog_max + 2 * self.max_in_flight
