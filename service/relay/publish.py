"""Publishing a job's one result event, together with its ``finished`` ledger entry (one
Kafka transaction); only then is its record's offset finished."""

from __future__ import annotations

from service.core import outcomes
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
    ) -> None:
        self._outbox = outbox
        self._jobs = jobs
        self._commits = commits
        self._writes = writes
        self._clock = tools.clock
        self._metrics = tools.metrics

    async def publish(self, ctx: JobContext, job: Job, outcome: Outcome) -> None:
        rid = ctx.request_id
        event = result_event(job, outcome, ctx.metadata)
        ok = outcome.status == "succeeded"
        done = LedgerEntry(
            key=rid,
            state="finished",
            source=ctx.source,
            at=ledger_time(self._clock.now()),
            status=outcome.status,
            fal_request_id=job.fal_request_id,
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
        self._metrics.end_to_end.observe(
            (self._clock.now() - event.timings.received_at).total_seconds()
        )
        ctx.log.info(
            "result_published",
            status=event.status,
            error_code=outcome.error.code if outcome.error else None,
            fal_request_id=event.fal_request_id,
        )
