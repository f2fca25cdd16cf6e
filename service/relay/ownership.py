"""Partition ownership: taking partitions over (assign) and handing them back (revoke, or
shutdown), with the commits that go with it.

Take-over: no record of a newly assigned partition is taken until the ledger shows every job
its previous owner submitted; those jobs are then resumed at once. The catch-up runs as a
task of its own, not in the rebalance callback: it may wait up to the transaction timeout
for a dead replica's open transaction, and the group coordinator sends no heartbeats while
the callback runs (nor reports its errors).

Hand-back: what happens to each piece of work is the core's ``hand_back`` decision; jobs at
fal are let go (never cancelled), a submit in progress is waited for, writes get the grace.
Before it returns, every write asked for has landed or failed, so nothing of ours lands after
the next owner has caught up with the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from service.core.backoff import Backoff
from service.core.fleet import slot_limit
from service.core.handback import HandBack, hand_back
from service.core.ledger import LedgerView
from service.core.offsets import Partition
from service.ports import LedgerFeed, Outbox
from service.relay.backlog import Backlog
from service.relay.commits import Commits
from service.relay.context import Jobs
from service.relay.runner import JobRunner
from service.relay.tools import Tools
from service.relay.work import WorkBoard


@dataclass(slots=True)
class PartitionStates:
    """The partitions that are ours, and those not to be taken from: being caught up with
    the ledger, or being handed back."""

    owned: set[Partition] = field(default_factory=set)
    catching_up: set[Partition] = field(default_factory=set)
    handing_back: set[Partition] = field(default_factory=set)


def _names(parts: set[Partition]) -> list[str]:
    return sorted(f"{t}/{p}" for t, p in parts)


class Ownership:
    def __init__(
        self,
        tools: Tools,
        *,
        ledger: LedgerFeed,
        view: LedgerView,
        jobs: Jobs,
        board: WorkBoard,
        runner: JobRunner,
        backlog: Backlog,
        commits: Commits,
        outbox: Outbox,
        partition_count: Callable[[], int | None],
        max_in_flight: int,
        fal_concurrency: int | None,
        parts: PartitionStates,
        started: asyncio.Event,
        wake: Callable[[], None],
        grace: float,
    ) -> None:
        self._ledger = ledger
        self._view = view
        self._jobs = jobs
        self._board = board
        self._runner = runner
        self._backlog = backlog
        self._partition_count = partition_count
        self._max_in_flight = max_in_flight
        self._cap = fal_concurrency
        self._commits = commits
        self._outbox = outbox
        self._parts = parts
        self._started = started
        self._wake = wake
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._grace = grace
        self._log = tools.log

    def share(self) -> None:
        """This replica's limit from the partitions it owns (see ``core.fleet``)."""
        owned = len(self._parts.owned)
        limit = slot_limit(self._max_in_flight, self._cap, owned, self._partition_count() or owned)
        self._jobs.set_limit(limit)
        self._metrics.fleet_share.set(limit)

    async def assigned(self, parts: set[Partition]) -> None:
        self._parts.catching_up |= parts  # before any await: fetches may follow at once
        self._parts.owned |= parts
        self.share()
        self._metrics.rebalances.inc()
        self._log.info("partitions_assigned", partitions=_names(parts))
        await self._started.wait()  # the group may assign before the relay opened its tasks
        if self._board.accepting:
            self._board.background(self._take_over(parts))

    async def _take_over(self, parts: set[Partition]) -> None:
        backoff = Backoff(0.5, 10.0)
        while parts & self._parts.catching_up:
            try:
                await self._ledger.take({(p.topic, p.partition) for p in parts})
            except Exception as exc:
                delay = backoff.next()
                self._log.warning("ledger_catch_up_failed", error=repr(exc), retry_in_s=delay)
                await self._clock.sleep(delay)
                continue
            mine = parts & self._parts.catching_up  # some may have been revoked meanwhile
            resumed = reconciling = 0
            for entry in self._view.submitted():
                part = Partition(entry.source.topic, entry.source.partition)
                if part in mine and entry.key not in self._jobs and entry.fal is not None:
                    self._runner.resume(entry)
                    resumed += 1
            # Submits whose answer never reached the ledger: fal's history settles them.
            for entry in self._view.intents():
                part = Partition(entry.source.topic, entry.source.partition)
                if part in mine and entry.key not in self._jobs:
                    self._runner.reconcile(entry)
                    reconciling += 1
            self._parts.catching_up -= mine
            self._log.info(
                "partitions_taken_over",
                partitions=_names(mine),
                jobs_resumed=resumed,
                jobs_reconciling=reconciling,
            )
            self._wake()
            return

    async def revoked(self, parts: set[Partition]) -> None:
        self._parts.catching_up -= parts
        self._parts.owned -= parts
        self._backlog.drop(parts)  # their next owner reads them again: nothing was committed
        self._metrics.rebalances.inc()
        self._log.info("partitions_revoked", partitions=_names(parts))
        await self.hand_back(parts)
        await self._commits.commit(parts)
        self._commits.drop(parts)
        self._ledger.release({(p.topic, p.partition) for p in parts})
        self.share()

    async def hand_back(self, parts: set[Partition] | None) -> None:
        """Let go of work in ``parts`` (all when None), leaving fal jobs running."""
        if parts is None:
            self._board.cancel_background()
            self._backlog.drop(None)
        works = self._board.of(parts)
        self._parts.handing_back |= {w.part for w in works} if parts is None else parts
        try:
            if not works:
                return
            let_go, submitting = 0, set()
            for work in works:
                job = self._jobs.state_of(work.request_id)
                action = hand_back(job.state if job is not None else None)
                if action is HandBack.WAIT_FOR_SUBMIT:
                    submitting.add(work.task)
                elif action is HandBack.LET_GO:
                    work.task.cancel()
                    let_go += 1
            pending = await self._clock.wait([w.task for w in works], self._grace)
            late = [t for t in pending if t not in submitting]
            for task in late:
                task.cancel()
            still_submitting = [t for t in pending if t in submitting]
            if still_submitting:
                stuck = await self._clock.wait(still_submitting, self._grace)
                for task in stuck:  # fal never answered: the one window left (README)
                    task.cancel()
            await self._clock.wait(pending, None)
            self._log.info("work_handed_back", jobs_left_at_fal=let_go, unfinished_writes=len(late))
        finally:
            with contextlib.suppress(TimeoutError):
                async with self._clock.timeout(self._grace):
                    await self._outbox.flush()
            if parts is not None:
                self._parts.handing_back -= parts
