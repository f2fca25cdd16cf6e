"""A message that cannot be accepted: its dead-letter copy, a failed event when its
request_id names no accepted request, and a ``rejected`` ledger entry, in one transaction."""

from __future__ import annotations

from service.core import outcomes
from service.core.ledger import LedgerEntry, LedgerView, Source, ledger_time
from service.decoding import Rejection
from service.messages import instant_event
from service.ports import InboundRecord, Outbox
from service.relay.commits import Commits
from service.relay.context import Jobs
from service.relay.tools import Tools
from service.relay.writes import DurableWrites


class RejectHandler:
    def __init__(
        self,
        tools: Tools,
        *,
        outbox: Outbox,
        view: LedgerView,
        jobs: Jobs,
        commits: Commits,
        writes: DurableWrites,
    ) -> None:
        self._outbox = outbox
        self._view = view
        self._jobs = jobs
        self._commits = commits
        self._writes = writes
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._log = tools.log

    async def reject(self, record: InboundRecord, source: Source, rejection: Rejection) -> None:
        rid = rejection.request_id
        log = self._log.bind(request_id=rid, partition=record.partition, offset=record.offset)
        now = self._clock.now()
        event = None
        if rid is not None and rid not in self._jobs and self._view.get(rid) is None:
            # Only an id that names no accepted request gets a failed event: a bad message
            # must not add a second terminal event to a request that is running or done.
            outcome = outcomes.invalid(rejection.message, rejection.details)
            event = instant_event(rid, outcome, now)
        entry = LedgerEntry(key=source.key, state="rejected", source=source, at=ledger_time(now))
        await self._writes.write(
            lambda: self._outbox.reject(record, rejection.reason, rejection.message, event, entry),
            "dead_letter",
            log,
            entry,
        )
        self._metrics.dead_letters.inc()
        self._metrics.requests_rejected.labels(rejection.reason).inc()
        if event is not None:
            self._metrics.results.labels("failed", "invalid_request").inc()
        log.info("request_rejected", reason=rejection.reason, error=rejection.message)
        self._commits.finish(record.part, record.offset)
