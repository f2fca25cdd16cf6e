"""Submitting a job to fal and making it durable: the step that must never be done twice.

Between fal's answer and the ledger's acknowledgement lies the one window in which a crash
can still cost a second submission; ``lynx_relay_ledger_write_seconds`` measures it. A
hand-back lets this step finish (within the grace) instead of cancelling it.
"""

from __future__ import annotations

from service.core.jobs import JobEvent
from service.core.ledger import FalRef, LedgerEntry, ledger_time
from service.ports import Outbox, SubmitOptions, VideoJobs
from service.relay.context import JobContext, Jobs
from service.relay.key_gate import KeyGate
from service.relay.tools import Tools
from service.relay.writes import DurableWrites


class Submitter:
    def __init__(
        self,
        tools: Tools,
        *,
        fal: VideoJobs,
        gate: KeyGate,
        outbox: Outbox,
        jobs: Jobs,
        writes: DurableWrites,
    ) -> None:
        self._fal = fal
        self._outbox = outbox
        self._jobs = jobs
        self._gate = gate
        self._writes = writes
        self._clock = tools.clock
        self._metrics = tools.metrics

    async def submit(self, ctx: JobContext) -> tuple[FalRef, float]:
        """Submit, then write the ``submitted`` entry; fal's job and the seconds it was not
        yet durable."""
        request = ctx.take_request()  # a job at fal keeps no copy of its input
        opts = request.options
        options = (
            SubmitOptions(opts.priority, opts.start_timeout_s, opts.runner_hint) if opts else None
        )
        arguments = request.input.to_fal_arguments()
        ref = await self._gate.call(lambda: self._fal.submit(arguments, options), ctx.log)
        accepted = self._clock.monotonic()
        self._metrics.fal_submissions.inc()
        job = self._jobs.job(ctx.request_id)
        entry = LedgerEntry(
            key=ctx.request_id,
            state="submitted",
            source=ctx.source,
            at=ledger_time(self._clock.now()),
            fal=ref,
            received_at=ledger_time(job.received_at),
            metadata=ctx.metadata,
            tenant=ctx.tenant,
            # Every time to the millisecond, as written: the entry must compare equal to itself
            # read back, or a write whose acknowledgement was lost would be written again.
            deadline=ledger_time(ctx.deadline) if ctx.deadline else None,
        )
        await self._writes.write(
            lambda: self._outbox.record_submitted(entry), "ledger", ctx.log, entry
        )
        window = self._clock.monotonic() - accepted
        self._metrics.ledger_write_seconds.observe(window)
        self._jobs.advance(
            ctx.request_id, JobEvent.SUBMITTED, entry.at, fal_request_id=ref.request_id
        )
        return ref, window
