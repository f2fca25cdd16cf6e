"""Submitting a job to fal and making it durable: the step that must never be done twice.

With fal's request history available, an ``intent`` entry (the request_id, a digest of the
exact body, the time) is acknowledged before the POST: if the answer is lost, or this process
dies before fal's answer is in the ledger, the intent is what lets fal's history say whether
the job exists (``service.relay.reconcile``). fal's answer then becomes the ``submitted``
entry, which replaces the intent; ``lynx_relay_ledger_write_seconds`` measures that write. A
hand-back lets this step finish (within the grace) instead of cancelling it.
"""

from __future__ import annotations

from collections.abc import Callable

from service.core.jobs import JobEvent
from service.core.ledger import EntryState, FalRef, LedgerEntry, ledger_time
from service.core.reconcile import Intent, body_digest
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
        with_intent: Callable[[], bool],
    ) -> None:
        self._fal = fal
        self._outbox = outbox
        self._jobs = jobs
        self._gate = gate
        self._writes = writes
        self._with_intent = with_intent
        self._clock = tools.clock
        self._metrics = tools.metrics

    async def submit(self, ctx: JobContext) -> tuple[FalRef, float]:
        """Write the intent, submit, then write the ``submitted`` entry; fal's job and the
        seconds it was not yet durable. Raises ``FalSubmitUnknown`` with ``ctx.intent`` set
        when the answer was lost after the intent was written."""
        request = ctx.request
        assert request is not None, "a request is submitted with its body"
        opts = request.options
        options = (
            SubmitOptions(opts.priority, opts.start_timeout_s, opts.runner_hint) if opts else None
        )
        arguments = request.input.to_fal_arguments()
        if self._with_intent():
            ctx.intent = await self._write_intent(ctx, body_digest(arguments))
        ref = await self._gate.call(lambda: self._fal.submit(arguments, options), ctx.log)
        accepted = self._clock.monotonic()
        ctx.request = None  # a job at fal keeps no copy of its input
        self._metrics.fal_submissions.inc()
        await self.record(ctx, ref)
        window = self._clock.monotonic() - accepted
        self._metrics.ledger_write_seconds.observe(window)
        return ref, window

    async def record(self, ctx: JobContext, ref: FalRef) -> None:
        """The ``submitted`` entry of the job fal has (answered at submit, or found in its
        history), durable before anything else is done with it."""
        entry = self._entry(ctx, "submitted", fal=ref)
        await self._writes.write(lambda: self._outbox.record_job(entry), "ledger", ctx.log, entry)
        ctx.intent = None
        self._jobs.advance(
            ctx.request_id, JobEvent.SUBMITTED, entry.at, fal_request_id=ref.request_id
        )

    async def _write_intent(self, ctx: JobContext, digest: str) -> Intent:
        entry = self._entry(ctx, "intent", digest=digest)
        await self._writes.write(lambda: self._outbox.record_job(entry), "ledger", ctx.log, entry)
        return Intent(ctx.request_id, digest, entry.at)

    def _entry(
        self,
        ctx: JobContext,
        state: EntryState,
        *,
        fal: FalRef | None = None,
        digest: str | None = None,
    ) -> LedgerEntry:
        """An intent or submitted entry, with what a take-over needs to carry on with the
        job. Every time to the millisecond, as written: an entry must compare equal to itself
        read back, or a write whose acknowledgement was lost would be written again."""
        job = self._jobs.job(ctx.request_id)
        return LedgerEntry(
            key=ctx.request_id,
            state=state,
            source=ctx.source,
            at=ledger_time(self._clock.now()),
            fal=fal,
            digest=digest,
            received_at=ledger_time(job.received_at),
            metadata=ctx.metadata,
            tenant=ctx.tenant,
            deadline=ledger_time(ctx.deadline) if ctx.deadline else None,
            units=ctx.expected_units,
        )
