"""One record: the core's decision for it (``decide_record``), carried out.

A record is decided when it is fetched, and a waiting request once more when its turn at fal
comes (the ledger, a cancel or a duplicate may have spoken meanwhile). A new request goes
into the backlog; it starts at once only when nothing waits and a slot is free (the common,
unsaturated case: no second decode, no scheduling).
"""

from __future__ import annotations

from datetime import datetime

from service.core.intake import RecordAction, RecordFacts, RecordKind, decide_record
from service.core.ledger import LedgerView, Source
from service.decoding import InputPolicy, Rejection, decode_request
from service.messages import CancelRequest, VideoRequest
from service.ports import InboundRecord
from service.relay.backlog import Backlog
from service.relay.budgets import Budgets
from service.relay.cancels import CancelHandler
from service.relay.commits import Commits
from service.relay.context import Jobs
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


class RecordHandler:
    def __init__(
        self,
        tools: Tools,
        *,
        view: LedgerView,
        jobs: Jobs,
        board: WorkBoard,
        commits: Commits,
        runner: JobRunner,
        cancels: CancelHandler,
        rejects: RejectHandler,
        backlog: Backlog,
        policy: InputPolicy,
        budgets: Budgets,
    ) -> None:
        self._budgets = budgets
        self._view = view
        self._jobs = jobs
        self._board = board
        self._commits = commits
        self._runner = runner
        self._cancels = cancels
        self._rejects = rejects
        self._backlog = backlog
        self._policy = policy
        self._metrics = tools.metrics
        self._log = tools.log

    def fetched(self, record: InboundRecord, now: datetime) -> bool:
        """Start, queue or skip the work of a fetched record; False when the backlog has no
        room for it (the caller rewinds its partition)."""
        decoded = decode_request(record.value, self._policy)
        source = Source(record.topic, record.partition, record.offset)
        action = decide_record(self._facts(decoded, source, now, self._backlog.room))
        if action is RecordAction.NO_ROOM:
            return False
        self._commits.track(record.part, record.offset)
        if action is RecordAction.QUEUE:
            assert isinstance(decoded, VideoRequest)
            if self._refused_for_budget(record, source, decoded):
                return True
            if not self._backlog.start_now(decoded):
                self._backlog.add(record, decoded)
                return True
        self._carry_out(action, record, decoded, source=source, now=now)
        return True

    def turn_came(self, record: InboundRecord, now: datetime, waited: float) -> None:
        """A waiting request's turn: decided again, then started (or skipped)."""
        decoded = decode_request(record.value, self._policy)
        source = Source(record.topic, record.partition, record.offset)
        action = decide_record(self._facts(decoded, source, now, room=1))
        self._carry_out(action, record, decoded, source=source, now=now, waited=waited)

    def _facts(
        self,
        decoded: VideoRequest | CancelRequest | Rejection,
        source: Source,
        now: datetime,
        room: int,
    ) -> RecordFacts:
        if isinstance(decoded, Rejection):
            return RecordFacts(RecordKind.INVALID, self._view.rejected_before(source))
        if isinstance(decoded, CancelRequest):
            return RecordFacts(RecordKind.CANCEL)
        rid = decoded.request_id
        ctx = self._jobs.context(rid)
        return RecordFacts(
            RecordKind.REQUEST,
            intake=self._view.decide(rid, source, now),
            held=ctx is not None,
            attached=ctx is not None and ctx.place is not None,
            cancelled=self._cancels.pending(rid),
            room=room,
        )

    def _carry_out(
        self,
        action: RecordAction,
        record: InboundRecord,
        decoded: VideoRequest | CancelRequest | Rejection,
        *,
        source: Source,
        now: datetime,
        waited: float = 0.0,
    ) -> None:
        part, offset = record.part, record.offset
        if action in _SKIPS:
            if action is RecordAction.SKIP_DUPLICATE:
                self._metrics.duplicates.inc()
            elif action is not RecordAction.SKIP_CANCELLED:
                self._metrics.redeliveries_skipped.inc()
            self._log.info(
                _SKIPS[action],
                request_id=decoded.request_id,
                partition=part.partition,
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
        elif action is RecordAction.RECONCILE:
            # Its submit's outcome is unknown and nobody here took it up: ask fal's history.
            entry = self._view.get(decoded.request_id)
            assert entry is not None
            self._runner.reconcile(entry, fetched=True)
        elif not self._refused_for_budget(record, source, decoded):
            self._budgets.started(decoded.tenant_name)
            self._runner.start(decoded, source, now, waited)

    def _refused_for_budget(
        self, record: InboundRecord, source: Source, request: VideoRequest
    ) -> bool:
        """A request whose tenant is at a ``reject`` budget: refused, never submitted."""
        at = self._budgets.refuses(request.tenant_name)
        if at is None:
            return False
        self._board.spawn(
            record.part, record.offset, None, self._budgets.refuse(record, source, request, at)
        )
        return True
