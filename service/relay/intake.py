"""Intake: fetch records ahead into the backlog, let the backlog start what may start, and
keep the consumer in its group however busy the relay is.

The intake never blocks: with the backlog full (``plan_intake``) or while fal refuses the key
it pauses every partition and keeps polling; a record fetched past the bound (from a
partition assigned while paused) is rewound and taken later. Partitions whose ledger is
still being caught up stay paused. What each record is and what it needs is the
``RecordHandler``'s (``records.py``); who goes next to fal is the ``Backlog``'s.
"""

from __future__ import annotations

import asyncio

from service.core.intake import plan_intake
from service.core.offsets import Partition
from service.ports import InboundRecord, Inbox, LedgerFeed
from service.relay.backlog import Backlog
from service.relay.commits import Commits
from service.relay.config import RelayConfig
from service.relay.context import Jobs
from service.relay.key_gate import KeyGate
from service.relay.ownership import PartitionStates
from service.relay.records import RecordHandler
from service.relay.tools import Tools

# The records of one fetch are in memory together (bytes, headers, decoded requests): a bounded
# batch keeps the process's high-water mark low while a deep backlog fills.
_MAX_BATCH = 500


class Intake:
    def __init__(
        self,
        tools: Tools,
        *,
        inbox: Inbox,
        ledger: LedgerFeed,
        jobs: Jobs,
        commits: Commits,
        records: RecordHandler,
        backlog: Backlog,
        gate: KeyGate,
        parts: PartitionStates,
        wake: asyncio.Event,
        config: RelayConfig,
    ) -> None:
        self._inbox = inbox
        self._ledger = ledger
        self._jobs = jobs
        self._commits = commits
        self._records = records
        self._backlog = backlog
        self._gate = gate
        self._parts = parts
        self._wake = wake
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._log = tools.log
        self._config = config
        self._stopping = False
        self._paused = False
        self._last_expiry_at = tools.clock.monotonic()
        self.last_loop_at = tools.clock.monotonic()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        cfg = self._config
        while not self._stopping:
            self.last_loop_at = self._clock.monotonic()
            self._wake.clear()
            plan = plan_intake(self._backlog.room, self._commits.unfinished, cfg.max_unfinished)
            if plan.pause or self._gate.refused:
                # Re-applied every turn: partitions assigned since the last turn start unpaused.
                self._inbox.pause_only(None)
                self._set_paused(True)
                await self._idle(cfg.idle_poll)
                # Keep polling while saturated, or the group drops us after max_poll_interval.
                records = await self._inbox.fetch(max_records=1, max_wait=0)
            else:
                self._inbox.pause_only(set(self._parts.catching_up))
                self._set_paused(False)
                # With requests waiting, a freed slot must not wait for the fetch's timeout.
                waiting = len(self._backlog) > 0
                records = await self._inbox.fetch(
                    max_records=min(plan.fetch, _MAX_BATCH),
                    max_wait=0 if waiting else cfg.fetch_timeout,
                )
                if waiting and not records:
                    await self._idle(cfg.fetch_timeout)
            self._take(records)
            if not self._gate.refused:
                await self._backlog.dispatch(self._records.turn_came)
            await self._commits.maybe_commit()
            now = self._clock.monotonic()
            if now - self._last_expiry_at >= cfg.ledger_expiry_interval:
                self._last_expiry_at = now
                self._ledger.expire(self._clock.now())

    async def _idle(self, seconds: float) -> None:
        """Until something happens (a slot frees, a record finishes, a stop) or ``seconds``."""
        try:
            async with self._clock.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _set_paused(self, paused: bool) -> None:
        if paused != self._paused:
            self._paused = paused
            self._metrics.partitions_paused.set(int(paused))
            self._log.debug(
                "intake_paused" if paused else "intake_resumed", in_flight=self._jobs.in_flight
            )

    def _take(self, records: list[InboundRecord]) -> None:
        """Carry out each record's action; rewind a partition at the first one that cannot
        be taken yet."""
        blocked: set[Partition] = set()
        now = self._clock.now()
        for record in records:
            part = record.part
            if part in blocked or part in self._parts.handing_back:
                continue
            # Not before the ledger shows what the previous owner did with this partition,
            # and not past the limit (a partition assigned while paused): take it later.
            if part in self._parts.catching_up or not self._records.fetched(record, now):
                self._inbox.rewind(record)
                blocked.add(part)
                continue
            self._metrics.requests_consumed.inc()
