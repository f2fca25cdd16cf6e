"""Publishing a job's one result event, together with its ``finished`` ledger entry (one
Kafka transaction); only then is its record's offset finished.

The event carries what the job cost (``core.cost``: fal's billed units at the account's
price), and so does the finished entry, with the tenant: spend per tenant is rebuilt from the
ledger."""

from __future__ import annotations

from collections.abc import Callable

from service.core import outcomes
from service.core.cost import Price, cost_of
from service.core.jobs import Job
from service.core.ledger import LedgerEntry, ledger_time
from service.core.outcomes import Outcome
from service.messages import result_event
from service.ports import Outbox
from service.relay.commits import Commits
from service.relay.context import JobContext, Jobs
from service.relay.tools import Tools
from service.relay.writes import DurableWrites


class ResultPublisher:
    def __init__(
        self,
        tools: Tools,
        *,
        outbox: Outbox,
        jobs: Jobs,
        commits: Commits,
        writes: DurableWrites,
        price: Callable[[], Price],
        tenant_label: Callable[[str], str],
    ) -> None:
        self._outbox = outbox
        self._price = price
        self._tenant_label = tenant_label
        self._jobs = jobs
        self._commits = commits
        self._writes = writes
        self._clock = tools.clock
        self._metrics = tools.metrics

    async def publish(self, ctx: JobContext, job: Job, outcome: Outcome) -> None:
        rid = ctx.request_id
        cost = cost_of(outcome.status, outcome.billed_units, ctx.expected_units, self._price())
        event = result_event(job, outcome, ctx.metadata, cost)
        ok = outcome.status == "succeeded"
        done = LedgerEntry(
            key=rid,
            state="finished",
            source=ctx.source,
            at=ledger_time(self._clock.now()),
            status=outcome.status,
            fal_request_id=job.fal_request_id,
            tenant=ctx.tenant,
            units=cost.units if cost else None,
            amount=cost.amount if cost else None,
            # What a restarted relay needs to poll warm: the job's shape and run time.
            shape=ctx.shape if ok else None,
            run_s=outcomes.run_seconds(job.started_at, job.completed_at) if ok else None,
        )
        await self._writes.write(lambda: self._outbox.finish(event, done), "results", ctx.log, done)
        place = self._jobs.release(rid)
        if place is not None:
            self._commits.finish(*place)
        self._metrics.results.labels(outcome.status, outcome.error_code).inc()
        if event.video is not None and event.video.duration:
            self._metrics.video_seconds.inc(float(event.video.duration))
        if cost is not None:
            label = self._tenant_label(ctx.tenant)
            self._metrics.tenant_spend.labels(label).inc(cost.amount)
            self._metrics.tenant_billed_units.labels(label).inc(cost.units)
        self._metrics.end_to_end.observe(
            (self._clock.now() - event.timings.received_at).total_seconds()
        )
        ctx.log.info(
            "result_published",
            status=event.status,
            error_code=outcome.error.code if outcome.error else None,
            fal_request_id=event.fal_request_id,
        )
