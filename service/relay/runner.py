"""One job's life, from its submit (or its resume) to its published result.

Never paying twice: a job's ``submitted`` ledger entry is written as soon as fal accepts it,
before anything else (``service.relay.submit``). A job found at fal in the ledger is resumed:
its fal job is watched, never submitted again. A submit whose answer was lost, or an intent
found in the ledger with nothing after it, is reconciled with fal's request history
(``service.relay.reconcile``): the job fal has is adopted and watched, or, surely absent, the
request is submitted again (its body read again from Kafka when this replica never had it).
Every way a job can end becomes one ``Outcome`` (``service.core.outcomes``) and so exactly one
result event, written together with the job's ``finished`` ledger entry; only then is its
record's offset finished.

Submitting is ``service.relay.submit``; watching, ``service.relay.watch``; publishing,
``service.relay.publish``. The job timeout (and the request's deadline) bound the time at
fal, through the clock; the submit itself is outside it, because a submit refused for the key
waits for the key to work again instead of failing the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from service.core import outcomes
from service.core.cost import expected_units
from service.core.jobs import Job, JobEvent, JobState
from service.core.ledger import FalRef, LedgerEntry, Source
from service.core.offsets import Partition
from service.core.outcomes import Outcome
from service.core.polling import PollSchedule, RunTimes
from service.core.reconcile import Intent
from service.errors import FalError, FalSubmitUnknown, FalUnavailable
from service.logs import get_logger
from service.messages import DEFAULT_TENANT, VideoRequest
from service.ports import FalOutput, FalPhase, FalStatus, VideoJobs
from service.relay.context import JobContext, Jobs
from service.relay.key_gate import KeyGate
from service.relay.progress import ProgressReporter
from service.relay.publish import ResultPublisher
from service.relay.reconcile import LostSubmits
from service.relay.storage import VideoKeeper
from service.relay.submit import Submitter
from service.relay.tools import Tools
from service.relay.watch import Watch, Watcher
from service.relay.work import WorkBoard

_ENDS = {
    "succeeded": JobEvent.SUCCEEDED,
    "failed": JobEvent.FAILED,
    "cancelled": JobEvent.CANCELLED,
}
_CANCEL_TIMEOUT_S = 10.0


class _HandedBack(Exception):
    """A job whose partition is being handed back stops once it is safely in the ledger."""


class JobRunner:
    def __init__(
        self,
        tools: Tools,
        *,
        fal: VideoJobs,
        jobs: Jobs,
        board: WorkBoard,
        gate: KeyGate,
        submitter: Submitter,
        lost: LostSubmits,
        watcher: Watcher,
        publisher: ResultPublisher,
        keeper: VideoKeeper | None,
        progress: ProgressReporter | None,
        run_times: RunTimes,
        poll: PollSchedule,
        job_timeout: float,
        handing_back: Callable[[Partition], bool],
        slot_freed: Callable[[], None],
        tenant_label: Callable[[str], str],
    ) -> None:
        self._fal = fal
        self._jobs = jobs
        self._board = board
        self._gate = gate
        self._submitter = submitter
        self._lost = lost
        self._watcher = watcher
        self._publisher = publisher
        self._keeper = keeper
        self._progress = progress
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._run_times = run_times
        self._poll = poll
        self._job_timeout = job_timeout
        self._handing_back = handing_back
        self._slot_freed = slot_freed
        self._tenant_label = tenant_label
        self._log = get_logger()

    # --- starting -------------------------------------------------------------------------

    def start(
        self, request: VideoRequest, source: Source, now: datetime, waited: float = 0.0
    ) -> None:
        """A new job for a fetched record (its offset is tracked); a slot must be free.
        ``waited``: seconds it waited in the backlog."""
        rid = request.request_id
        options = request.options
        tenant = request.tenant_name
        label = self._tenant_label(tenant)
        self._metrics.tenant_starts.labels(label).inc()
        self._metrics.tenant_wait.labels(label).observe(waited)
        ctx = JobContext(
            rid,
            source,
            log=self._log.bind(request_id=rid),
            tenant=tenant,
            metadata=request.metadata,
            deadline=options.deadline if options else None,
            shape=request.input.shape,
            expected_units=expected_units(
                request.input.num_frames, request.input.frames_per_second
            ),
            request=request,
            place=(Partition(source.topic, source.partition), source.offset),
        )
        # Received when it was read, before it waited in the backlog.
        self._jobs.admit(ctx, Job(rid, received_at=now - timedelta(seconds=waited)))
        self._board.spawn(ctx.part, source.offset, rid, self._run(ctx))

    def resume(self, entry: LedgerEntry, *, fetched: bool = False) -> None:
        """Watch a job that is at fal already (the ledger says so); never submit it again.
        ``fetched``: its record was fetched, so its offset waits for the job."""
        assert entry.fal is not None
        ctx = self._taken_up(entry, fetched, resume=entry.fal)
        job = Job(
            entry.key,
            received_at=entry.received_at or entry.at,
            state=JobState.SUBMITTED,
            fal_request_id=entry.fal.request_id,
            submitted_at=entry.at,
        )
        self._jobs.adopt(ctx, job)
        self._board.spawn(ctx.part, entry.source.offset, entry.key, self._run(ctx))

    def reconcile(self, entry: LedgerEntry, *, fetched: bool = False) -> None:
        """Take up a submit whose outcome is unknown (an intent with nothing after it, found in
        the ledger): fal's history says whether to watch its job or submit it again."""
        ctx = self._taken_up(entry, fetched, intent=Intent(entry.key, entry.digest or "", entry.at))
        job = Job(entry.key, received_at=entry.received_at or entry.at, state=JobState.RECONCILING)
        self._jobs.adopt(ctx, job)  # it may be at fal: it holds a slot, limit or not
        self._board.spawn(ctx.part, entry.source.offset, entry.key, self._run(ctx))

    def _taken_up(
        self,
        entry: LedgerEntry,
        fetched: bool,
        *,
        resume: FalRef | None = None,
        intent: Intent | None = None,
    ) -> JobContext:
        """The context of a job taken up from its ledger entry (what the entry kept)."""
        source = entry.source
        return JobContext(
            entry.key,
            source,
            log=self._log.bind(request_id=entry.key),
            metadata=entry.metadata,
            deadline=entry.deadline,
            tenant=entry.tenant or DEFAULT_TENANT,
            expected_units=entry.units,
            resume=resume,
            intent=intent,
            place=(Partition(source.topic, source.partition), source.offset) if fetched else None,
        )

    # --- running --------------------------------------------------------------------------

    async def _run(self, ctx: JobContext) -> None:
        try:
            try:
                outcome = await self._drive(ctx)
                if outcome.status == "succeeded" and self._keeper is not None:
                    # Before the result and the finished entry: a crash here is resumed,
                    # and the copy made again, never the job (``relay.storage``).
                    fal_id = self._jobs.job(ctx.request_id).fal_request_id or ""
                    outcome = await self._keeper.keep(ctx, fal_id, outcome)
            except _HandedBack:
                self._jobs.release(ctx.request_id)
                return
            except Exception as exc:  # a bug, never input: the request still gets its event
                ctx.log.exception("job_crashed")
                outcome = outcomes.crashed(type(exc).__name__)
            job = self._end(ctx, outcome)
            self._slot_freed()
            await self._publisher.publish(ctx, job, outcome)
        except asyncio.CancelledError:
            self._jobs.release(ctx.request_id)
            raise

    async def _drive(self, ctx: JobContext) -> Outcome:
        """Submit (or resume), watch and fetch; every failure becomes a failed outcome."""
        ref: FalRef | None = None
        try:
            if ctx.deadline is not None and outcomes.deadline_passed(
                self._clock.now(), ctx.deadline
            ):
                return self._failed(ctx, outcomes.past_deadline_before_submit(ctx.deadline))
            ref = await self._at_fal(ctx)
            if self._handing_back(ctx.part):
                raise _HandedBack
            if ctx.cancel_requested and not ctx.cancel_sent:  # cancelled while submitting
                ctx.cancel_sent = True
                ctx.log.info("job_cancel_sent")
                await self.cancel_quietly(ref, ctx.log)
            job = self._jobs.job(ctx.request_id)
            limit = outcomes.time_left(
                self._clock.now(), job.submitted_at, self._job_timeout, ctx.deadline
            )
            async with self._clock.timeout(limit):
                status, output = await self._watcher.watch(self._watch(ctx, ref))
                return await self._collect(ctx, ref, status, output)
        except TimeoutError:
            if ref is not None:
                await self.cancel_quietly(ref, ctx.log)
            outcome = outcomes.timed_out(self._clock.now(), ctx.deadline, self._job_timeout)
        except FalError as exc:
            outcome = outcomes.failed(
                exc.code,
                exc.message,
                retryable=exc.retryable,
                details=exc.details,
                billed_units=exc.billable_units,
            )
        return self._failed(ctx, outcome)

    def _failed(self, ctx: JobContext, outcome: Outcome) -> Outcome:
        assert outcome.error is not None
        ctx.log.warning("job_failed", error_code=outcome.error.code, error=outcome.error.message)
        return outcome

    async def _at_fal(self, ctx: JobContext) -> FalRef:
        """The job's fal job: submitted now, the one the ledger named, or the one fal's
        history shows for a submit whose answer was lost."""
        if ctx.resume is not None:
            ctx.log = ctx.log.bind(fal_request_id=ctx.resume.request_id)
            self._metrics.jobs_resumed.inc()
            ctx.log.info("job_resumed")
            return ctx.resume
        while True:
            if ctx.intent is None:
                try:
                    ref, window = await self._submitter.submit(ctx)
                except FalSubmitUnknown as exc:
                    if ctx.intent is None:  # no history to ask: it fails, as it always did
                        raise
                    ctx.log.warning("submit_outcome_unknown", error=exc.message)
                    self._jobs.advance(ctx.request_id, JobEvent.UNKNOWN, self._clock.now())
                else:
                    ctx.log = ctx.log.bind(fal_request_id=ref.request_id)
                    ctx.log.info("job_submitted", ledger_write_ms=round(window * 1000, 2))
                    return ref
            adopted = await self._lost.settle(ctx)
            if adopted is not None:
                return adopted

    def _watch(self, ctx: JobContext, ref: FalRef) -> Watch:
        rid = ctx.request_id

        def running_since() -> datetime | None:
            job = self._jobs.state_of(rid)
            return job.started_at if job is not None else None

        return Watch(
            ref=ref,
            log=ctx.log,
            note=lambda status: self._note(ctx, status),
            running_since=running_since,
            expected=self._run_times.expected(ctx.shape) if ctx.shape else None,
            fresh=ctx.resume is None,
        )

    def _note(self, ctx: JobContext, status: FalStatus) -> bool:
        """Apply a status to the job; True once it is completed."""
        now = self._clock.now()
        rid = ctx.request_id
        if self._progress is not None:
            self._progress.report(ctx, self._jobs.job(rid).fal_request_id, status, now)
        if status.phase is FalPhase.QUEUED:
            self._jobs.advance(rid, JobEvent.QUEUED, now, queue_position=status.queue_position)
            return False
        if status.phase is FalPhase.RUNNING:
            self._jobs.advance(rid, JobEvent.STARTED, now)
            return False
        self._jobs.advance(rid, JobEvent.COMPLETED, now, inference_time=status.inference_time)
        return True

    async def _collect(
        self, ctx: JobContext, ref: FalRef, status: FalStatus, output: FalOutput | None
    ) -> Outcome:
        job = self._jobs.job(ctx.request_id)
        if job.submitted_at and job.started_at:
            self._metrics.queue_wait.observe((job.started_at - job.submitted_at).total_seconds())
        if job.started_at and job.completed_at:
            run = (job.completed_at - job.started_at).total_seconds()
            self._metrics.run_time.observe(run)
            if ctx.shape is not None and status.error is None:
                self._run_times.observe(ctx.shape, status.inference_time or run)
        cancelled = outcomes.cancelled_at_fal(status.error, status.error_type)
        if cancelled is not None:
            return cancelled
        started = self._clock.monotonic()
        while output is None:
            try:
                # Raises FalError when the job failed.
                output = await self._gate.call(lambda: self._fal.result(ref), ctx.log)
            except FalUnavailable as exc:
                ctx.log.warning("fal_result_unavailable", error=exc.message)
                elapsed = self._clock.monotonic() - started
                await self._clock.sleep(self._poll.next_delay(elapsed))
        return outcomes.succeeded(output.video, output.seed, output.billable_units)

    async def cancel_quietly(self, ref: FalRef, log: Any) -> None:
        # Nobody will take this result, so stop paying for it; failure here changes nothing.
        try:
            async with self._clock.timeout(_CANCEL_TIMEOUT_S):
                await self._fal.cancel(ref)
        except (FalError, TimeoutError) as exc:
            log.warning("fal_cancel_failed", error=str(exc))

    # --- ending ---------------------------------------------------------------------------

    def _end(self, ctx: JobContext, outcome: Outcome) -> Job:
        """The job's terminal state (its slot is free from here)."""
        job = self._jobs.job(ctx.request_id)
        if not job.holds_slot:
            return job
        return self._jobs.advance(ctx.request_id, _ENDS[outcome.status], self._clock.now())
