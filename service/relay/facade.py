"""``Relay``: the units of the relay, wired, and the few calls the composition root makes.

It owns nothing but the wiring and the TaskGroup's lifetime: ``run()`` opens the group,
runs intake until ``request_stop``, then hands everything back and commits, even after an
error. Rebalance callbacks go to ``Ownership``; verified webhooks to the webhook watcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypedDict

from service.core.cost import Price
from service.core.ledger import ENTRY_STATES, LedgerView
from service.core.offsets import Partition
from service.core.polling import RunTimes
from service.logs import get_logger
from service.metrics import RelayMetrics
from service.ports import (
    Clock,
    FalHistory,
    FalOutput,
    FalPricing,
    FalStatus,
    Inbox,
    LedgerFeed,
    Outbox,
    OutputStore,
    VideoFiles,
    VideoJobs,
)
from service.relay.backlog import Backlog
from service.relay.budgets import Budgets
from service.relay.cancels import CancelHandler
from service.relay.commits import Commits
from service.relay.config import RelayConfig
from service.relay.context import Jobs
from service.relay.intake import Intake
from service.relay.key_gate import KeyGate
from service.relay.ownership import Ownership, PartitionStates
from service.relay.prices import Prices
from service.relay.progress import ProgressReporter
from service.relay.publish import ResultPublisher
from service.relay.reconcile import LostSubmits, Reconciler
from service.relay.records import RecordHandler
from service.relay.rejects import RejectHandler
from service.relay.runner import JobRunner
from service.relay.storage import VideoKeeper
from service.relay.submit import Submitter
from service.relay.tools import Tools
from service.relay.watch.modes import watcher_for
from service.relay.work import WorkBoard
from service.relay.writes import DurableWrites


class Relay:
    def __init__(
        self,
        *,
        inbox: Inbox,
        outbox: Outbox,
        fal: VideoJobs,
        ledger: LedgerFeed,
        view: LedgerView,
        clock: Clock,
        metrics: RelayMetrics,
        config: RelayConfig,
        history: FalHistory | None = None,
        pricing: FalPricing | None = None,
        store: OutputStore | None = None,
        files: VideoFiles | None = None,
    ) -> None:
        tools = Tools(clock, metrics, get_logger())
        self._log, self._view = tools.log, view
        self._wake = wake = asyncio.Event()
        self._started = asyncio.Event()
        self._jobs = jobs = Jobs(config.max_in_flight)
        if config.fal_concurrency is not None:
            jobs.set_limit(0)  # a share of the account comes with the first partitions
            jobs.set_fleet(config.fal_concurrency, lambda: view.at_fal, _recorded(view))
        self._board = board = WorkBoard()
        self._run_times = RunTimes()
        parts = PartitionStates()
        self._commits = commits = Commits(
            tools, inbox=inbox, interval=config.commit_interval, on_finish=wake.set
        )
        self._gate = gate = KeyGate(tools, wake.set)
        self._writes = writes = DurableWrites(
            tools,
            ledger=ledger,
            view=view,
            backoff=config.write_backoff,
            stall=config.write_stall,
        )
        watcher, self._deliveries = watcher_for(
            config.watch_mode,
            fal=fal,
            gate=gate,
            clock=clock,
            poll=config.poll,
            safety_poll=config.webhook_safety_poll,
            webhook_grace=config.webhook_grace,
        )
        self._reconciler = reconciler = Reconciler(
            tools,
            history=history if config.history_off is None else None,
            off_reason=config.history_off,
            view=view,
            jobs=jobs,
            interval=config.reconcile_interval,
            give_up_after=config.reconcile_give_up,
            skew=config.reconcile_skew,
        )
        self._prices = prices = Prices(
            tools,
            pricing=pricing,
            fallback=Price(config.fallback_unit_price),
            refresh=config.price_refresh,
        )
        progress = ProgressReporter(
            outbox, clock, config.progress_min_interval, config.progress_max_logs
        )
        submitter = Submitter(
            tools,
            fal=fal,
            gate=gate,
            outbox=outbox,
            jobs=jobs,
            writes=writes,
            with_intent=lambda: reconciler.available,
        )
        self._runner = runner = JobRunner(
            tools,
            fal=fal,
            jobs=jobs,
            board=board,
            gate=gate,
            submitter=submitter,
            lost=LostSubmits(
                tools,
                reconciler=reconciler,
                fal=fal,
                submitter=submitter,
                jobs=jobs,
                inbox=inbox,
                policy=config.input_policy,
            ),
            watcher=watcher,
            publisher=ResultPublisher(
                tools,
                commits=commits,
                outbox=outbox,
                jobs=jobs,
                writes=writes,
                price=prices.current,
                tenant_label=config.tenants.label,
            ),
            keeper=VideoKeeper(tools, files=files, store=store, config=config.output)
            if config.output is not None and store is not None and files is not None
            else None,
            progress=progress if config.progress else None,
            run_times=self._run_times,
            poll=config.poll,
            job_timeout=config.job_timeout,
            handing_back=lambda part: part in parts.handing_back,
            slot_freed=wake.set,
            tenant_label=config.tenants.label,
        )
        budgets = Budgets(
            tools,
            tenants=config.tenants,
            view=view,
            jobs=jobs,
            price=prices.current,
            outbox=outbox,
            commits=commits,
            writes=writes,
            pace=config.budget_pace,
        )
        self._backlog = backlog = Backlog(
            tools,
            inbox=inbox,
            jobs=jobs,
            tenants=config.tenants,
            max_requests=config.backlog_max,
            body_bytes=config.backlog_body_bytes,
            aging=config.priority_aging,
            budget_allows=budgets.may_start if budgets.limited else None,
        )
        handlers = _Handlers(outbox=outbox, view=view, jobs=jobs, commits=commits, writes=writes)
        records = RecordHandler(
            tools,
            view=view,
            jobs=jobs,
            board=board,
            commits=commits,
            runner=runner,
            cancels=CancelHandler(tools, cancel_at_fal=runner.cancel_quietly, **handlers),
            rejects=RejectHandler(tools, **handlers),
            backlog=backlog,
            policy=config.input_policy,
            budgets=budgets,
        )
        self._intake = Intake(
            tools,
            inbox=inbox,
            ledger=ledger,
            jobs=jobs,
            commits=commits,
            records=records,
            backlog=backlog,
            gate=gate,
            parts=parts,
            wake=wake,
            config=config,
        )
        self._ownership = Ownership(
            tools,
            ledger=ledger,
            view=view,
            jobs=jobs,
            board=board,
            runner=runner,
            backlog=backlog,
            commits=commits,
            outbox=outbox,
            partition_count=inbox.partition_count,
            max_in_flight=config.max_in_flight,
            fal_concurrency=config.fal_concurrency,
            parts=parts,
            started=self._started,
            wake=wake.set,
            grace=config.shutdown_grace,
        )
        for label in config.tenants.labels():  # at zero, so rate() sees a tenant's first cost
            metrics.tenant_spend.labels(label)
            metrics.tenant_billed_units.labels(label)
        metrics.max_in_flight.set(config.max_in_flight)
        metrics.fal_concurrency.set(config.fal_concurrency or 0)
        metrics.jobs_in_flight.set_function(lambda: jobs.in_flight)
        for state in ENTRY_STATES:
            metrics.ledger_entries.labels(state).set_function(_count(view, state))

    @property
    def running(self) -> bool:
        return self._board.accepting

    @property
    def last_loop_at(self) -> float:
        """When the intake loop last turned (the liveness probe's question)."""
        return self._intake.last_loop_at

    @property
    def waiting(self) -> int:
        """Requests in the backlog, waiting for a slot."""
        return len(self._backlog)

    @property
    def in_flight(self) -> int:
        """Jobs holding a fal slot right now."""
        return self._jobs.in_flight

    @property
    def fal_key_refused(self) -> bool:
        return self._gate.refused

    @property
    def fal_history_off(self) -> str | None:
        """Why a submit whose answer is lost is not reconciled with fal's history (None: it
        is)."""
        return self._reconciler.off_reason

    @property
    def failing_writes(self) -> dict[str, str]:
        """Kinds of Kafka write failing right now, with the first error seen."""
        return self._writes.failing

    def expected_run_time(self, shape: str) -> float | None:
        """What jobs of ``shape`` took so far (learned here or from the ledger)."""
        return self._run_times.expected(shape)

    async def wait_started(self) -> None:
        """Until ``run()`` is taking work."""
        await self._started.wait()

    def request_stop(self) -> None:
        self._intake.stop()

    async def run(self) -> None:
        """Work until ``request_stop``; then hand back and commit, even after an error."""
        # What the ledger remembers of finished jobs' run times: a restart polls warm.
        for shape, seconds in self._view.run_times():
            self._run_times.observe(shape, seconds)
        try:
            async with asyncio.TaskGroup() as group:
                self._board.open(group)
                self._board.background(self._reconcile())
                self._board.background(self._prices.run())
                self._started.set()
                try:
                    await self._intake.run()
                finally:
                    self._board.stop_accepting()
                    await self._ownership.hand_back(None)
        finally:
            await self._commits.commit(None)
        self._log.info("relay_stopped")

    async def _reconcile(self) -> None:
        await self._reconciler.probe()
        await self._reconciler.run()

    async def partitions_assigned(self, parts: set[Partition]) -> None:
        await self._ownership.assigned(parts)

    async def partitions_revoked(self, parts: set[Partition]) -> None:
        await self._ownership.revoked(parts)

    def webhook_delivered(
        self, fal_request_id: str, status: FalStatus, output: FalOutput | None
    ) -> None:
        """A verified, parsed webhook from fal (webhook mode; ignored otherwise)."""
        if self._deliveries is not None:
            self._deliveries.deliver(fal_request_id, (status, output))


class _Handlers(TypedDict):
    """What the handlers of cancels and invalid messages share."""

    outbox: Outbox
    view: LedgerView
    jobs: Jobs
    commits: Commits
    writes: DurableWrites


def _recorded(view: LedgerView) -> Callable[[str], bool]:
    def recorded(request_id: str) -> bool:
        entry = view.get(request_id)
        return entry is not None and entry.state == "intent"

    return recorded


def _count(view: LedgerView, state: str) -> Callable[[], float]:
    return lambda: view.counts()[state]
