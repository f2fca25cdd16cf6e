"""A cancel message: cancel its request wherever it is (``service.core.cancels`` says where),
so that the request still ends in exactly one event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from service.core import outcomes
from service.core.cancels import CancelTarget, cancel_target
from service.core.ledger import FalRef, LedgerEntry, LedgerView, Source, ledger_time
from service.messages import CancelRequest, instant_event
from service.ports import InboundRecord, Outbox
from service.relay.commits import Commits
from service.relay.context import Jobs
from service.relay.tools import Tools
from service.relay.writes import DurableWrites


class CancelHandler:
    def __init__(
        self,
        tools: Tools,
        *,
        outbox: Outbox,
        view: LedgerView,
        jobs: Jobs,
        commits: Commits,
        writes: DurableWrites,
        cancel_at_fal: Callable[[FalRef, Any], Awaitable[None]],
    ) -> None:
        self._outbox = outbox
        self._view = view
        self._jobs = jobs
        self._commits = commits
        self._writes = writes
        self._cancel_at_fal = cancel_at_fal
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._log = tools.log
        self._pending: set[str] = set()  # cancelled, not held here, not in the ledger yet

    def pending(self, request_id: str) -> bool:
        """A cancel for this request_id is being carried out: its request must not start."""
        return request_id in self._pending

    def note(self, request_id: str) -> None:
        """A cancel was fetched; noted before any later record is looked at."""
        ctx = self._jobs.context(request_id)
        if ctx is not None:
            ctx.cancel_requested = True  # its task cancels it at fal once fal has it
        else:
            self._pending.add(request_id)

    async def cancel(self, record: InboundRecord, source: Source, cancel: CancelRequest) -> None:
        rid = cancel.request_id
        log = self._log.bind(request_id=rid, partition=record.partition, offset=record.offset)
        entry = self._view.get(rid)
        target = cancel_target(rid in self._jobs, entry)
        if target is CancelTarget.SUBMITTING:
            log.info("cancel_requested", where="submitting")
        elif target is CancelTarget.AT_FAL:
            # Ours or another replica's: its watcher sees it end as cancelled and publishes
            # the one event (whatever the watch mode).
            assert entry is not None
            assert entry.fal is not None
            ctx = self._jobs.context(rid)
            if ctx is not None and ctx.cancel_sent:
                # Its own task sent the cancel already (the cancel came during its submit).
                log.info("cancel_requested", where="at_fal", already_sent=True)
            else:
                if ctx is not None:
                    ctx.cancel_sent = True
                log.info("cancel_requested", where="at_fal")
                await self._cancel_at_fal(entry.fal, log)
        elif target is CancelTarget.NOT_SEEN:
            await self._cancelled_before_submit(rid, source, log)
        else:
            assert entry is not None
            log.info("cancel_too_late", state=entry.state, status=entry.status)
        self._pending.discard(rid)  # from now on the ledger (or the job) speaks for it
        self._commits.finish(record.part, record.offset)

    async def _cancelled_before_submit(self, rid: str, source: Source, log: Any) -> None:
        """A ``cancelled`` event now; its ``finished`` entry makes the request a duplicate
        if it comes later: never submitted."""
        now = self._clock.now()
        event = instant_event(rid, outcomes.cancelled_before_submit(), now)
        done = LedgerEntry(
            key=rid, state="finished", source=source, at=ledger_time(now), status="cancelled"
        )
        await self._writes.write(lambda: self._outbox.finish(event, done), "results", log, done)
        self._metrics.results.labels("cancelled", "cancelled").inc()
        log.info("result_published", status="cancelled", error_code="cancelled")
