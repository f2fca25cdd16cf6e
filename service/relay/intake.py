"""Intake: fetch records, decide what each one is, start the work, and keep the consumer in
its group however busy the relay is.

The intake never blocks on a slot: at the limit (``plan_intake``) or while fal refuses the
key it pauses every partition and keeps polling; a record fetched past the limit (from a
partition assigned while paused) is rewound and taken later. Partitions whose ledger is
still being caught up stay paused. Each record gets one ``RecordAction`` from the core's
``decide_record``; this module only carries it out.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from service.core.intake import RecordAction, RecordFacts, RecordKind, decide_record, plan_intake
from service.core.ledger import LedgerView, Source
from service.core.offsets import Partition
from service.decoding import Rejection, decode_request
from service.messages import CancelRequest
from service.ports import InboundRecord, Inbox, LedgerFeed
from service.relay.cancels import CancelHandler
from service.relay.commits import Commits
from service.relay.config import RelayConfig
from service.relay.context import Jobs
from service.relay.key_gate import KeyGate
from service.relay.ownership import PartitionStates
from service.relay.rejects import RejectHandler
from service.relay.runner import JobRunner
from service.relay.tools import Tools
from service.relay.work import WorkBoard

_SKIPS = {
    RecordAction.SKIP_REJECTED: "redelivery_skipped",
    RecordAction.SKIP_DONE: "redelivery_skipped",
    RecordAction.SKIP_DUPLICATE: "duplicate_request_skipped",
    RecordAction.SKIP_CANCELLED: "cancelled_request_skipped",
}


class Intake:
    def __init__(
        self,
        tools: Tools,
        *,
        inbox: Inbox,
        ledger: LedgerFeed,
        view: LedgerView,
        jobs: Jobs,
        board: WorkBoard,
        commits: Commits,
        runner: JobRunner,
        cancels: CancelHandler,
        rejects: RejectHandler,
        gate: KeyGate,
        parts: PartitionStates,
        wake: asyncio.Event,
        config: RelayConfig,
    ) -> None:
        self._inbox = inbox
        self._ledger = ledger
        self._view = view
        self._jobs = jobs
        self._board = board
        self._commits = commits
        self._runner = runner
        self._cancels = cancels
        self._rejects = rejects
        self._gate = gate
        self._parts = parts
        self._wake = wake
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._config = config
        self._log = tools.log
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
            plan = plan_intake(self._jobs.free_slots, self._commits.unfinished, cfg.max_unfinished)
            if plan.pause or self._gate.refused:
                # Re-applied every turn: partitions assigned since the last turn start unpaused.
                self._inbox.pause_only(None)
                self._set_paused(True)
                try:
                    async with self._clock.timeout(cfg.idle_poll):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                # Keep polling while saturated, or the group drops us after max_poll_interval.
                records = await self._inbox.fetch(max_records=1, max_wait=0)
            else:
                self._inbox.pause_only(set(self._parts.catching_up))
                self._set_paused(False)
                records = await self._inbox.fetch(
                    max_records=plan.fetch, max_wait=cfg.fetch_timeout
                )
            self._take(records)
            await self._commits.maybe_commit()
            now = self._clock.monotonic()
            if now - self._last_expiry_at >= cfg.ledger_expiry_interval:
                self._last_expiry_at = now
                self._ledger.expire(self._clock.now())

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
            if part in self._parts.catching_up or not self._take_one(record, now):
                self._inbox.rewind(record)
                blocked.add(part)
                continue
            self._metrics.requests_consumed.inc()

    def _take_one(self, record: InboundRecord, now: datetime) -> bool:
        """Start (or skip) the work of one record; False when it needs a slot there is not."""
        part, offset = record.part, record.offset
        source = Source(record.topic, record.partition, offset)
        decoded = decode_request(record.value, self._config.input_policy)
        if isinstance(decoded, Rejection):
            facts = RecordFacts(RecordKind.INVALID, self._view.rejected_before(source))
        elif isinstance(decoded, CancelRequest):
            facts = RecordFacts(RecordKind.CANCEL)
        else:
            ctx = self._jobs.context(decoded.request_id)
            facts = RecordFacts(
                RecordKind.REQUEST,
                intake=self._view.decide(decoded.request_id, source, now),
                held=ctx is not None,
                attached=ctx is not None and ctx.place is not None,
                cancelled=self._cancels.pending(decoded.request_id),
                free_slots=self._jobs.free_slots,
            )
        action = decide_record(facts)
        if action is RecordAction.NO_SLOT:
            return False
        self._commits.track(part, offset)
        if action in _SKIPS:
            if action is RecordAction.SKIP_DUPLICATE:
                self._metrics.duplicates.inc()
            elif action is not RecordAction.SKIP_CANCELLED:
                self._metrics.redeliveries_skipped.inc()
            self._log.info(
                _SKIPS[action],
                request_id=decoded.request_id,
                partition=record.partition,
                offset=offset,
            )
            self._commits.finish(part, offset)
        elif isinstance(decoded, Rejection):
            self._board.spawn(part, offset, None, self._rejects.reject(record, source, decoded))
        elif isinstance(decoded, CancelRequest):
            # Noted at once: a request behind it in this very batch must not start.
            self._cancels.note(decoded.request_id)
            self._board.spawn(part, offset, None, self._cancels.cancel(record, source, decoded))
        elif action is RecordAction.ATTACH:
            # The record of a job resumed at assignment: its offset now waits for the job.
            ctx = self._jobs.context(decoded.request_id)
            assert ctx is not None
            ctx.place = (part, offset)
        elif action is RecordAction.RESUME:
            # At fal, but not resumed at assignment (its entry arrived late): resume now.
            entry = self._view.get(decoded.request_id)
            assert entry is not None
            self._runner.resume(entry, fetched=True)
        else:
            self._runner.start(decoded, source, now)
        return True
