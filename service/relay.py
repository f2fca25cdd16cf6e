"""The relay loop: fetch -> decide -> submit (or resume) -> watch -> publish -> commit.

It owns the concurrency of the service, in one place: one TaskGroup holds a task per record
being worked on; the intake loop never blocks on a slot (at the limit it pauses the partitions
and keeps polling); offsets are committed only for the contiguous finished prefix of each
partition, and a record is finished only once its result event (or dead-letter copy) and its
ledger entry are acknowledged by Kafka, together. It knows the ports (``service.ports``), not
aiokafka or httpx.

Never paying twice: a job's ``submitted`` ledger entry is written as soon as fal accepts it,
before anything else. When partitions are assigned, the relay catches up with the ledger and
resumes, at once, every job of those partitions that is at fal (it watches the existing fal
job; it does not submit). When a record is fetched, the ledger view decides whether it is new,
the record of a job being resumed (its offset is attached to that job), a duplicate, or
already done. Jobs handed back on shutdown or rebalance are left running at fal.

Hand-back (shutdown, or partitions revoked): stop intake; a job still being submitted gets to
finish its submit and ledger write; jobs recorded at fal are let go (not cancelled); writes in
flight get ``shutdown_grace`` seconds; what is finished is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from service.core.intake import plan_intake
from service.core.jobs import Job, JobBook, JobEvent, JobState
from service.core.ledger import FalRef, Intake, LedgerEntry, LedgerView, Source
from service.core.offsets import OffsetBook, Partition, commit_due
from service.core.polling import PollSchedule, RunTimes
from service.core.progress import ProgressGate
from service.errors import FalError, FalTimeout, FalUnauthorized, FalUnavailable, RelayError
from service.logs import get_logger
from service.messages import (
    DEFAULT_POLICY,
    CancelRequest,
    ErrorInfo,
    InputPolicy,
    ProgressEvent,
    ProgressLog,
    Rejection,
    ResultEvent,
    Timings,
    Video,
    VideoRequest,
    decode_request,
)
from service.metrics import RelayMetrics
from service.ports import (
    Clock,
    FalJobHandle,
    FalOutput,
    FalPhase,
    FalStatus,
    InboundRecord,
    Inbox,
    LedgerFeed,
    Outbox,
    SubmitOptions,
    VideoJobs,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    max_in_flight: int
    poll: PollSchedule = field(default_factory=PollSchedule)
    job_timeout: float = 3600.0
    shutdown_grace: float = 10.0
    commit_interval: float = 1.0
    fetch_timeout: float = 0.5
    idle_poll: float = 1.0
    write_backoff: tuple[float, float] = (0.2, 5.0)
    write_stall: float = 10.0
    ledger_expiry_interval: float = 60.0
    watch_mode: Literal["poll", "stream", "webhook"] = "poll"
    webhook_safety_poll: float = 60.0
    webhook_grace: float = 1.0
    input_policy: InputPolicy = DEFAULT_POLICY
    progress: bool = False
    progress_min_interval: float = 1.0
    progress_max_logs: int = 50

    @property
    def max_unfinished(self) -> int:
        # Finished jobs whose results are not yet acknowledged may add up to one more limit's
        # worth before intake stops: enough to keep fal busy while Kafka acks, and bounded.
        return 2 * self.max_in_flight


class _HandedBack(Exception):
    """A job whose partition is being handed back stops once it is safely in the ledger."""


@dataclass(slots=True)
class _Work:
    task: asyncio.Task[None]
    request_id: str | None


@dataclass(slots=True)
class _Pending:
    """A request on its way to fal, handed over once: a job at fal does not keep its input (a
    data URI can be megabytes) for the minutes it runs."""

    request: VideoRequest | None

    def take(self) -> VideoRequest:
        request, self.request = self.request, None
        assert request is not None, "a request is submitted once"
        return request


class Relay:
    def __init__(
        self,
        *,
        inbox: Inbox,
        outbox: Outbox,
        fal: VideoJobs,
        ledger: LedgerFeed,
        view: LedgerView,
        clock: Clock,
        metrics: RelayMetrics,
        config: RelayConfig,
    ) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._fal = fal
        self._ledger = ledger
        self._view = view
        self._clock = clock
        self._metrics = metrics
        self._config = config
        self._book = JobBook(config.max_in_flight)
        self._offsets = OffsetBook()
        self._work: dict[tuple[Partition, int], _Work] = {}
        self._handing_back: set[Partition] = set()
        self._catching_up: set[Partition] = set()
        self._take_overs: set[asyncio.Task[None]] = set()
        self._cancels: set[str] = set()  # request_ids whose job must be cancelled at fal
        self._shapes: dict[str, str] = {}  # request_id -> the job's shape, for RunTimes
        self._run_times = RunTimes()
        self._webhooks = _Webhooks()
        self._progress: dict[str, tuple[ProgressGate, list[int]]] = {}  # gate, logs seen
        self.fal_key_refused = False
        self.failing_writes: dict[str, str] = {}  # topic kind -> the first error seen
        # A job's place in its partition, once its record was fetched (only the place: the
        # record's bytes, up to RELAY_MAX_MESSAGE_BYTES, are not kept for the job's minutes).
        self._attached: dict[str, tuple[Partition, int]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._paused = False
        self._commit_lock = asyncio.Lock()
        self._last_commit_at = clock.monotonic()
        self._last_expiry_at = clock.monotonic()
        self._tg: asyncio.TaskGroup | None = None
        self._started = asyncio.Event()
        self._log = get_logger()
        self.running = False
        self.last_loop_at = clock.monotonic()
        metrics.max_in_flight.set(config.max_in_flight)
        metrics.jobs_in_flight.set_function(lambda: self._book.in_flight)
        for state in ("submitted", "finished", "rejected"):
            metrics.ledger_entries.labels(state).set_function(self._ledger_count(state))

    def _ledger_count(self, state: str) -> Callable[[], float]:
        return lambda: self._view.counts()[state]

    async def wait_started(self) -> None:
        """Until ``run()`` is taking work."""
        await self._started.wait()

    def expected_run_time(self, shape: str) -> float | None:
        """What jobs of ``shape`` took so far (learned here or from the ledger)."""
        return self._run_times.expected(shape)

    @property
    def in_flight(self) -> int:
        """Jobs holding a fal slot right now."""
        return self._book.in_flight

    # --- lifecycle ------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Work until ``request_stop``; then hand back and commit, even after an error."""
        # What the ledger remembers of finished jobs' run times: a restart polls warm.
        for shape, seconds in self._view.run_times():
            self._run_times.observe(shape, seconds)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self.running = True
                self._started.set()
                try:
                    await self._intake_loop()
                finally:
                    self.running = False
                    await self._hand_back(None)
        finally:
            await self._commit(None)
        self._log.info("relay_stopped")

    # --- intake ---------------------------------------------------------------------------

    async def _intake_loop(self) -> None:
        cfg = self._config
        while not self._stopping:
            self.last_loop_at = self._clock.monotonic()
            self._wake.clear()
            plan = plan_intake(self._book.free_slots, self._offsets.unfinished, cfg.max_unfinished)
            if plan.pause or self.fal_key_refused:
                # Re-applied every turn: partitions assigned since the last turn start unpaused.
                self._inbox.pause_only(None)
                self._set_paused(True)
                try:
                    async with asyncio.timeout(cfg.idle_poll):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                # Keep polling while saturated, or the group drops us after max_poll_interval.
                records = await self._inbox.fetch(max_records=1, max_wait=0)
            else:
                # Partitions whose ledger is still being caught up stay paused.
                self._inbox.pause_only(set(self._catching_up))
                self._set_paused(False)
                records = await self._inbox.fetch(
                    max_records=plan.fetch, max_wait=cfg.fetch_timeout
                )
            self._take(records)
            now = self._clock.monotonic()
            if commit_due(now, self._last_commit_at, cfg.commit_interval, True):
                await self._commit(None)
            if now - self._last_expiry_at >= cfg.ledger_expiry_interval:
                self._last_expiry_at = now
                self._view.expire(self._clock.now())

    def _set_paused(self, paused: bool) -> None:
        if paused != self._paused:
            self._paused = paused
            self._metrics.partitions_paused.set(int(paused))
            self._log.debug(
                "intake_paused" if paused else "intake_resumed", in_flight=self._book.in_flight
            )

    def _take(self, records: list[InboundRecord]) -> None:
        """Decide on each record; rewind a partition at the first one that cannot be taken."""
        blocked: set[Partition] = set()
        now = self._clock.now()
        for record in records:
            part = record.part
            if part in blocked or part in self._handing_back:
                continue
            # Not before the ledger shows what the previous owner did with this partition,
            # and not past the limit (a partition assigned while paused): take it later.
            if part in self._catching_up or not self._take_one(record, now):
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
            if self._view.rejected_before(source):
                self._metrics.redeliveries_skipped.inc()
                self._skip(record, "redelivery_skipped", decoded.request_id)
            else:
                self._offsets.track(part, offset)
                self._spawn(part, offset, None, self._reject(record, source, decoded))
            return True
        if isinstance(decoded, CancelRequest):
            # Noted at once: a request behind it in this very batch must not start.
            self._cancels.add(decoded.request_id)
            self._offsets.track(part, offset)
            self._spawn(part, offset, None, self._cancel(record, source, decoded))
            return True
        rid = decoded.request_id
        intake = self._view.decide(rid, source, now)
        held = rid in self._book
        if held and intake is Intake.RESUME and rid not in self._attached:
            # The record of a job resumed at assignment: its offset now waits for the job.
            self._offsets.track(part, offset)
            self._attached[rid] = (part, offset)
        elif held or intake is Intake.DUPLICATE:
            self._metrics.duplicates.inc()
            self._skip(record, "duplicate_request_skipped", rid)
        elif rid in self._cancels and intake is Intake.NEW:
            self._skip(record, "cancelled_request_skipped", rid)
        elif intake is Intake.DONE:
            self._metrics.redeliveries_skipped.inc()
            self._skip(record, "redelivery_skipped", rid)
        elif intake is Intake.RESUME:
            # At fal, but not resumed at assignment (its entry arrived late): resume now.
            entry = self._view.get(rid)
            assert entry is not None
            self._offsets.track(part, offset)
            self._attached[rid] = (part, offset)
            self._resume(entry)
        elif self._book.free_slots <= 0:
            return False
        else:
            self._book.admit(Job(rid, received_at=now))
            self._shapes[rid] = _shape(decoded)
            self._offsets.track(part, offset)
            self._attached[rid] = (part, offset)
            options = decoded.options
            self._spawn(
                part,
                offset,
                rid,
                self._run_job(
                    source=source,
                    rid=rid,
                    metadata=decoded.metadata,
                    request=_Pending(decoded),
                    resume=None,
                    deadline=options.deadline if options else None,
                ),
            )
        return True

    def _resume(self, entry: LedgerEntry) -> None:
        """Watch a job that is at fal already (the ledger says so); never submit it again."""
        assert entry.fal is not None
        self._book.adopt(
            Job(
                entry.key,
                received_at=entry.received_at or entry.at,
                state=JobState.SUBMITTED,
                fal_request_id=entry.fal.request_id,
                submitted_at=entry.at,
            )
        )
        part = Partition(entry.source.topic, entry.source.partition)
        self._spawn(
            part,
            entry.source.offset,
            entry.key,
            self._run_job(
                source=entry.source,
                rid=entry.key,
                metadata=entry.metadata,
                request=None,
                resume=entry.fal,
                deadline=entry.deadline,
            ),
        )

    def _skip(self, record: InboundRecord, event: str, request_id: str | None) -> None:
        self._log.info(
            event, request_id=request_id, partition=record.partition, offset=record.offset
        )
        self._offsets.track(record.part, record.offset)
        self._finish(record)

    def _spawn(
        self,
        part: Partition,
        offset: int,
        request_id: str | None,
        work: Coroutine[Any, Any, None],
    ) -> None:
        assert self._tg is not None
        key = (part, offset)
        task = self._tg.create_task(work)
        self._work[key] = _Work(task, request_id)
        task.add_done_callback(lambda _t: self._work.pop(key, None))

    def _finish(self, record: InboundRecord) -> None:
        self._finish_at(record.part, record.offset)

    def _finish_at(self, part: Partition, offset: int) -> None:
        self._offsets.finish(part, offset)
        self._wake.set()

    # --- one valid request ----------------------------------------------------------------

    async def _run_job(
        self,
        *,
        source: Source,
        rid: str,
        metadata: dict[str, Any] | None,
        request: _Pending | None,
        resume: FalRef | None,
        deadline: datetime | None,
    ) -> None:
        """One job from submit (``request``) or resume (``resume``) to its published result."""
        log = self._log.bind(request_id=rid)
        try:
            try:
                event = await self._drive(
                    source=source,
                    rid=rid,
                    metadata=metadata,
                    request=request,
                    resume=resume,
                    deadline=deadline,
                    log=log,
                )
            except _HandedBack:
                self._release(rid)
                return
            except Exception as exc:  # a bug, never input: the request still gets its event
                log.exception("job_crashed")
                job = self._book.get(rid)
                assert job is not None
                if job.holds_slot:
                    job = self._terminal(rid, JobEvent.FAILED)
                event = _event(
                    job,
                    metadata,
                    status="failed",
                    error=ErrorInfo(
                        code="internal_error",
                        message=f"relay error: {type(exc).__name__}",
                        retryable=True,
                    ),
                )
            self._wake.set()  # a slot is free
            done = LedgerEntry(
                key=rid,
                state="finished",
                source=source,
                at=self._stamp(),
                status=event.status,
                shape=self._shapes.get(rid) if event.status == "succeeded" else None,
                run_s=_run_seconds(event) if event.status == "succeeded" else None,
            )
            await self._write(lambda: self._outbox.finish(event, done), "results", log, done)
            self._view.apply(rid, done)
            place = self._release(rid)
            if place is not None:
                self._finish_at(*place)
            self._metrics.results.labels(
                event.status, event.error.code if event.error else "none"
            ).inc()
            if event.video is not None and event.video.duration:
                self._metrics.video_seconds.inc(float(event.video.duration))
            self._metrics.end_to_end.observe(
                (self._clock.now() - event.timings.received_at).total_seconds()
            )
            log.info(
                "result_published",
                status=event.status,
                error_code=event.error.code if event.error else None,
                fal_request_id=event.fal_request_id,
            )
        except asyncio.CancelledError:
            self._release(rid)
            raise

    def _release(self, rid: str) -> tuple[Partition, int] | None:
        """Let go of a job; its record's place, if it was fetched (that offset waits on us)."""
        self._cancels.discard(rid)
        self._shapes.pop(rid, None)
        self._progress.pop(rid, None)
        if rid in self._book:
            self._book.release(rid)
        return self._attached.pop(rid, None)

    async def _drive(
        self,
        *,
        source: Source,
        rid: str,
        metadata: dict[str, Any] | None,
        request: _Pending | None,
        resume: FalRef | None,
        deadline: datetime | None,
        log: Any,
    ) -> ResultEvent:
        """Submit (or resume), watch and fetch; every failure becomes a failed event.

        The job timeout (and the request's deadline) bound the time at fal; the submit itself
        is outside it, because a submit refused for the key waits for the key to work again
        instead of failing the request.
        """
        handle: FalJobHandle | None = None
        try:
            if deadline is not None and self._clock.now() >= deadline:
                raise FalTimeout(
                    "the request's deadline passed before it was submitted",
                    retryable=False,
                    details={"deadline": deadline.isoformat()},
                )
            if resume is None:
                assert request is not None
                handle, window = await self._submit(source, request.take(), log)
                log = log.bind(fal_request_id=handle.request_id)
                log.info("job_submitted", ledger_write_ms=round(window * 1000, 2))
            else:
                handle = FalJobHandle(
                    resume.request_id, resume.status_url, resume.response_url, resume.cancel_url
                )
                log = log.bind(fal_request_id=handle.request_id)
                self._metrics.jobs_resumed.inc()
                log.info("job_resumed")
            if Partition(source.topic, source.partition) in self._handing_back:
                raise _HandedBack
            if rid in self._cancels:  # cancelled while it was being submitted
                log.info("job_cancel_sent")
                await self._cancel_quietly(handle, log)
            limit = self._remaining(rid)
            if deadline is not None:
                limit = min(limit, (deadline - self._clock.now()).total_seconds())
            async with asyncio.timeout(max(0.0, limit)):
                status, output = await self._watch(rid, handle, log, fresh=resume is None)
                return await self._collect(
                    rid=rid, metadata=metadata, handle=handle, status=status, output=output, log=log
                )
        except TimeoutError:
            if handle is not None:
                await self._cancel_quietly(handle, log)
            past_deadline = deadline is not None and self._clock.now() >= deadline
            err: FalError = FalTimeout(
                "the request's deadline passed; the job was cancelled at fal"
                if past_deadline
                else f"no result within RELAY_JOB_TIMEOUT_S={self._config.job_timeout:g}s",
                retryable=not past_deadline,
            )
        except FalError as exc:
            err = exc
        log.warning("job_failed", error_code=err.code, error=err.message)
        job = self._terminal(rid, JobEvent.FAILED)
        return _event(job, metadata, error=_error_info(err))

    async def _with_key(self, call: Callable[[], Awaitable[T]], log: Any) -> T:
        """A fal call that waits out a refused key (401/403) instead of failing the request.

        The first refusal pauses intake, turns /readyz red and logs one error line; the call is
        tried again with capped backoff; the first call that is accepted again clears it all.
        """
        delay = 2.0
        while True:
            try:
                result = await call()
            except FalUnauthorized as exc:
                if not self.fal_key_refused:
                    self.fal_key_refused = True
                    self._metrics.fal_key_refused.set(1)
                    self._log.error(
                        "fal_key_refused",
                        error=exc.message,
                        hint="check FAL_KEY; intake is paused until fal accepts it again",
                    )
                    self._wake.set()
                await self._clock.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            if self.fal_key_refused:
                self.fal_key_refused = False
                self._metrics.fal_key_refused.set(0)
                self._log.info("fal_key_accepted")
                self._wake.set()
            log.debug("fal_call_ok")
            return result

    def _remaining(self, rid: str) -> float:
        """The job timeout counts from the submit, also for a resumed job."""
        job = self._book.get(rid)
        assert job is not None
        if job.submitted_at is None:
            return self._config.job_timeout
        age = (self._clock.now() - job.submitted_at).total_seconds()
        return max(0.0, self._config.job_timeout - age)

    async def _submit(
        self, source: Source, request: VideoRequest, log: Any
    ) -> tuple[FalJobHandle, float]:
        """Submit, then make the job durable in the ledger before anything else.

        Between fal's answer and the ledger's acknowledgement lies the one window in which a
        crash can still cost a second submission; ``lynx_relay_ledger_write_seconds`` measures
        it. A hand-back lets this step finish (within the grace) instead of cancelling it.
        """
        rid = request.request_id
        opts = request.options
        submit_options = (
            SubmitOptions(opts.priority, opts.start_timeout_s, opts.runner_hint) if opts else None
        )
        arguments = request.input.to_fal_arguments()
        handle = await self._with_key(lambda: self._fal.submit(arguments, submit_options), log)
        accepted = self._clock.monotonic()
        self._metrics.fal_submissions.inc()
        job = self._book.get(rid)
        assert job is not None
        entry = LedgerEntry(
            key=rid,
            state="submitted",
            source=source,
            at=self._stamp(),
            fal=FalRef(
                handle.request_id, handle.status_url, handle.response_url, handle.cancel_url
            ),
            received_at=_ms(job.received_at),
            metadata=request.metadata,
            deadline=opts.deadline if opts else None,
        )
        await self._write(lambda: self._outbox.record_submitted(entry), "ledger", log, entry)
        window = self._clock.monotonic() - accepted
        self._metrics.ledger_write_seconds.observe(window)
        self._view.apply(rid, entry)
        self._book.advance(rid, JobEvent.SUBMITTED, entry.at, fal_request_id=handle.request_id)
        return handle, window

    async def _watch(
        self, rid: str, handle: FalJobHandle, log: Any, *, fresh: bool = False
    ) -> tuple[FalStatus, FalOutput | None]:
        """Until fal reports the job completed: the status, and its output when the webhook
        already carried it (no result call then)."""
        mode = self._config.watch_mode
        if mode == "webhook":
            return await self._watch_webhook(rid, handle, log)
        if mode == "stream":
            status = await self._watch_stream(rid, handle, log)
            if status is not None:
                return status, None
        return await self._watch_poll(rid, handle, log, fresh=fresh), None

    def _note(self, rid: str, status: FalStatus) -> bool:
        """Apply a status to the job; True once it is completed."""
        now = self._clock.now()
        if self._config.progress:
            self._report_progress(rid, status, now)
        if status.phase is FalPhase.QUEUED:
            self._book.advance(rid, JobEvent.QUEUED, now, queue_position=status.queue_position)
            return False
        if status.phase is FalPhase.RUNNING:
            self._book.advance(rid, JobEvent.STARTED, now)
            return False
        self._book.advance(rid, JobEvent.COMPLETED, now, inference_time=status.inference_time)
        return True

    def _report_progress(self, rid: str, status: FalStatus, now: datetime) -> None:
        """Progress events for a status, as many as the job's gate lets through."""
        cfg = self._config
        gate, seen = self._progress.setdefault(
            rid, (ProgressGate(cfg.progress_min_interval, cfg.progress_max_logs), [0])
        )
        job = self._book.get(rid)
        fal_id = job.fal_request_id if job else None
        tick = self._clock.monotonic()
        out: list[ProgressEvent] = []
        if status.phase is FalPhase.QUEUED and gate.queued(status.queue_position, tick):
            out.append(
                ProgressEvent(
                    request_id=rid,
                    fal_request_id=fal_id,
                    event="queued",
                    queue_position=status.queue_position,
                    at=now,
                )
            )
        if status.phase is not FalPhase.QUEUED and gate.started():
            out.append(
                ProgressEvent(request_id=rid, fal_request_id=fal_id, event="started", at=now)
            )
        fresh = status.logs[seen[0] :]  # fal sends all of a job's lines so far each time
        seen[0] = len(status.logs)
        for line in fresh[: gate.logs(len(fresh), tick)]:
            out.append(
                ProgressEvent(
                    request_id=rid,
                    fal_request_id=fal_id,
                    event="log",
                    at=now,
                    log=ProgressLog(
                        message=line.message, level=line.level, timestamp=line.timestamp
                    ),
                )
            )
        for event in out:
            self._outbox.progress(event)

    async def _poll_once(self, rid: str, handle: FalJobHandle, log: Any) -> FalStatus | None:
        try:
            status = await self._with_key(lambda: self._fal.status(handle), log)
        except FalUnavailable as exc:
            # The job is at fal and paid for: a fal outage is waited out (until the job
            # timeout), not turned into a failure that abandons a running job.
            log.warning("fal_status_unavailable", error=exc.message)
            return None
        return status if self._note(rid, status) else None

    async def _watch_poll(
        self, rid: str, handle: FalJobHandle, log: Any, *, fresh: bool = False
    ) -> FalStatus:
        started = self._clock.monotonic()
        shape = self._shapes.get(rid)
        expected = self._run_times.expected(shape) if shape else None
        if fresh:
            # fal's answer to the submit said IN_QUEUE a moment ago: asking again at once would
            # be a call that tells nothing (a resumed job, in contrast, may be long done).
            await self._clock.sleep(self._config.poll.next_delay(0.0))
        while True:
            status = await self._poll_once(rid, handle, log)
            if status is not None:
                return status
            job = self._book.get(rid)
            running_for = None
            if job is not None and job.started_at is not None:
                running_for = (self._clock.now() - job.started_at).total_seconds()
            delay = self._config.poll.next_delay(
                self._clock.monotonic() - started, running_for, expected
            )
            await self._clock.sleep(delay)

    async def _watch_stream(self, rid: str, handle: FalJobHandle, log: Any) -> FalStatus | None:
        """fal's status stream (one connection per job), reconnecting when it drops; after
        three failures in a row, None: the caller polls instead."""
        failures = 0
        while failures < 3:
            try:
                async for status in self._fal.stream(handle):
                    failures = 0
                    if self._note(rid, status):
                        return status
            except FalError as exc:
                failures += 1
                log.warning("fal_stream_dropped", error=exc.message, failures=failures)
                await self._clock.sleep(min(5.0, 0.5 * failures))
        log.warning("fal_stream_unusable_polling_instead")
        return None

    async def _watch_webhook(
        self, rid: str, handle: FalJobHandle, log: Any
    ) -> tuple[FalStatus, FalOutput | None]:
        """Wait for fal's signed webhook; a slow poll is the safety net for a lost one."""
        delivery = self._webhooks.expect(handle.request_id)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._config.webhook_safety_poll):
                        body = await asyncio.shield(delivery)
                except TimeoutError:
                    status = await self._poll_once(rid, handle, log)
                    if status is None:
                        continue
                    # Done at fal: its webhook is usually on the way; a moment's wait for it
                    # saves the result call (and is faster than it).
                    try:
                        async with asyncio.timeout(self._config.webhook_grace):
                            body = await asyncio.shield(delivery)
                    except TimeoutError:
                        log.info("webhook_missed_safety_poll_found_it")
                        return status, None
                    return status, _from_webhook(body)[1]
                status, output = _from_webhook(body)
                self._note(rid, status)
                return status, output
        finally:
            self._webhooks.forget(handle.request_id)

    def webhook_delivered(self, fal_request_id: str, body: dict[str, Any]) -> None:
        """A verified webhook from fal (the ops endpoint checked its signature)."""
        self._webhooks.deliver(fal_request_id, body)

    async def _collect(
        self,
        *,
        rid: str,
        metadata: dict[str, Any] | None,
        handle: FalJobHandle,
        status: FalStatus,
        output: FalOutput | None,
        log: Any,
    ) -> ResultEvent:
        job = self._book.get(rid)
        assert job is not None
        if job.submitted_at and job.started_at:
            self._metrics.queue_wait.observe((job.started_at - job.submitted_at).total_seconds())
        if job.started_at and job.completed_at:
            run = (job.completed_at - job.started_at).total_seconds()
            self._metrics.run_time.observe(run)
            shape = self._shapes.get(rid)
            if shape is not None and status.error is None:
                self._run_times.observe(shape, status.inference_time or run)
        if status.error_type == "client_cancelled":
            job = self._terminal(rid, JobEvent.CANCELLED)
            return _event(
                job,
                metadata,
                status="cancelled",
                error=ErrorInfo(
                    code="cancelled",
                    message=status.error or "the job was cancelled at fal",
                    retryable=False,
                    details={"error_type": status.error_type},
                ),
            )
        started = self._clock.monotonic()
        while output is None:
            try:
                # Raises FalError when the job failed.
                output = await self._with_key(lambda: self._fal.result(handle), log)
            except FalUnavailable as exc:
                log.warning("fal_result_unavailable", error=exc.message)
                elapsed = self._clock.monotonic() - started
                await self._clock.sleep(self._config.poll.next_delay(elapsed))
        job = self._terminal(rid, JobEvent.SUCCEEDED)
        return _event(job, metadata, output=output)

    def _stamp(self) -> datetime:
        return _ms(self._clock.now())

    def _terminal(self, rid: str, event: JobEvent) -> Job:
        return self._book.advance(rid, event, self._clock.now())

    async def _cancel_quietly(self, handle: FalJobHandle, log: Any) -> None:
        # Nobody will take this result, so stop paying for it; failure here changes nothing.
        try:
            async with asyncio.timeout(10):
                await self._fal.cancel(handle)
        except (FalError, TimeoutError) as exc:
            log.warning("fal_cancel_failed", error=str(exc))

    # --- one cancel message ---------------------------------------------------------------

    async def _cancel(self, record: InboundRecord, source: Source, cancel: CancelRequest) -> None:
        """Cancel a request wherever it is: in flight here (the job's own task cancels it at
        fal and publishes the one `cancelled` event), at fal under another replica (cancelled
        at fal; its owner publishes the event), not seen yet (a `cancelled` event now, and its
        ledger entry makes the request a duplicate if it comes later: never submitted), or
        finished already (nothing: it has its one event)."""
        rid = cancel.request_id
        log = self._log.bind(request_id=rid, partition=record.partition, offset=record.offset)
        entry = self._view.get(rid)
        at_fal = entry is not None and entry.state == "submitted" and entry.fal is not None
        if rid in self._book and not at_fal:
            # Being submitted: its task cancels it at fal as soon as fal has it.
            log.info("cancel_requested", where="submitting")
        elif at_fal and entry is not None and entry.fal is not None:
            # Ours or another replica's: cancelled at fal, the job's watcher then sees it end
            # as cancelled and publishes the one event (whatever the watch mode).
            log.info("cancel_requested", where="at_fal")
            ref = entry.fal
            await self._cancel_quietly(
                FalJobHandle(ref.request_id, ref.status_url, ref.response_url, ref.cancel_url),
                log,
            )
        elif entry is None:
            now = self._clock.now()
            event = ResultEvent(
                request_id=rid,
                status="cancelled",
                error=ErrorInfo(
                    code="cancelled", message="cancelled before it was submitted", retryable=False
                ),
                timings=Timings(received_at=now, completed_at=now),
            )
            done = LedgerEntry(
                key=rid, state="finished", source=source, at=_ms(now), status="cancelled"
            )
            await self._write(lambda: self._outbox.finish(event, done), "results", log, done)
            self._view.apply(rid, done)
            self._metrics.results.labels("cancelled", "cancelled").inc()
            log.info("result_published", status="cancelled", error_code="cancelled")
        else:
            log.info("cancel_too_late", state=entry.state, status=entry.status)
        if rid not in self._book:
            self._cancels.discard(rid)  # from now on the ledger speaks for it
        self._finish(record)

    # --- one invalid message --------------------------------------------------------------

    async def _reject(self, record: InboundRecord, source: Source, rejection: Rejection) -> None:
        log = self._log.bind(
            request_id=rejection.request_id, partition=record.partition, offset=record.offset
        )
        now = self._clock.now()
        event = None
        rid = rejection.request_id
        if rid is not None and rid not in self._book and self._view.get(rid) is None:
            # Only an id that names no accepted request gets a failed event: a bad message
            # must not add a second terminal event to a request that is running or done.
            event = ResultEvent(
                request_id=rid,
                status="failed",
                error=ErrorInfo(
                    code="invalid_request",
                    message=rejection.message,
                    retryable=False,
                    details=rejection.details,
                ),
                timings=Timings(received_at=now, completed_at=now),
            )
        entry = LedgerEntry(key=source.key, state="rejected", source=source, at=_ms(now))
        await self._write(
            lambda: self._outbox.reject(record, rejection.reason, rejection.message, event, entry),
            "dead_letter",
            log,
            entry,
        )
        self._view.apply(entry.key, entry)
        self._metrics.dead_letters.inc()
        self._metrics.requests_rejected.labels(rejection.reason).inc()
        if event is not None:
            self._metrics.results.labels("failed", "invalid_request").inc()
        log.info("request_rejected", reason=rejection.reason, error=rejection.message)
        self._finish(record)

    # --- Kafka writes and commits ---------------------------------------------------------

    async def _write(
        self,
        write: Callable[[], Awaitable[None]],
        kind: str,
        log: Any,
        entry: LedgerEntry,
    ) -> None:
        """Never drop a write: retry with capped backoff until acknowledged (or cancelled).

        A transaction can commit and still be reported as failed (its answer was lost); the
        ledger then already holds ``entry``, and writing again would publish twice. So after a
        failure the ledger is read up to date first, and a write that landed is not repeated.
        """
        delay, cap = self._config.write_backoff
        while True:
            try:
                await self._watched(write(), kind)
            except Exception as exc:  # aiokafka raises many types; every one means "not acked"
                self._metrics.publish_failures.labels(kind).inc()
                self._writes_failing(kind, exc)
                log.debug("kafka_write_failed", topic_kind=kind, error=repr(exc), retry_in_s=delay)
                await self._clock.sleep(delay)
                delay = min(cap, delay * 2)
                with contextlib.suppress(Exception):
                    await self._ledger.catch_up()
                    if self._view.get(entry.key) == entry:
                        log.info("kafka_write_had_landed", topic_kind=kind)
                        self._writes_ok(kind)
                        return
            else:
                self._writes_ok(kind)
                return

    async def _watched(self, write: Awaitable[None], kind: str) -> None:
        """A write that is not acknowledged within ``write_stall`` counts as failing while it
        waits (a broker that is down makes the client wait rather than fail)."""
        task = asyncio.ensure_future(write)
        try:
            done, _ = await asyncio.wait({task}, timeout=self._config.write_stall)
            if not done:
                self._writes_failing(
                    kind, TimeoutError(f"no acknowledgement within {self._config.write_stall:g} s")
                )
            await task
        except asyncio.CancelledError:
            task.cancel()
            raise

    def _writes_failing(self, kind: str, exc: Exception) -> None:
        """One line per condition (a kind of write starting to fail), not one per message."""
        if kind not in self.failing_writes:
            self.failing_writes[kind] = repr(exc)
            self._metrics.kafka_writes_failing.labels(kind).set(1)
            self._log.error(
                "kafka_writes_failing",
                topic_kind=kind,
                error=repr(exc),
                hint="nothing is committed past the unwritten records; retrying with backoff",
            )

    def _writes_ok(self, kind: str) -> None:
        if self.failing_writes.pop(kind, None) is not None:
            self._metrics.kafka_writes_failing.labels(kind).set(0)
            self._log.info("kafka_writes_recovered", topic_kind=kind)

    async def _commit(self, parts: Iterable[Partition] | None) -> None:
        # One commit at a time: a slower, older commit must never land after a newer one.
        async with self._commit_lock:
            self._last_commit_at = self._clock.monotonic()
            offsets = self._offsets.committable(parts)
            if not offsets:
                return
            try:
                await self._inbox.commit(offsets)
            except Exception as exc:
                self._metrics.commit_failures.inc()
                self._log.warning("commit_failed", error=repr(exc))
                return
            self._offsets.mark_committed(offsets)
            self._metrics.commits.inc()

    # --- rebalance and shutdown -----------------------------------------------------------

    async def partitions_assigned(self, parts: set[Partition]) -> None:
        """Take over ``parts``: no record of theirs is taken until the ledger shows every job
        their previous owner submitted; those jobs are then resumed at once.

        The catch-up runs as a task of its own, not in this callback: it may wait up to the
        transaction timeout for a dead replica's open transaction, and the group coordinator
        sends no heartbeats while the callback runs (nor reports its errors).
        """
        self._catching_up |= parts  # before any await: fetches may follow at once
        self._metrics.rebalances.inc()
        self._log.info("partitions_assigned", partitions=sorted(f"{t}/{p}" for t, p in parts))
        await self._started.wait()  # the group may assign before run() opened its task group
        if not self.running or self._tg is None:
            return
        task = self._tg.create_task(self._take_over(parts))
        self._take_overs.add(task)
        task.add_done_callback(self._take_overs.discard)

    async def _take_over(self, parts: set[Partition]) -> None:
        delay = 0.5
        while parts & self._catching_up:
            try:
                await self._ledger.catch_up()
            except Exception as exc:
                self._log.warning("ledger_catch_up_failed", error=repr(exc), retry_in_s=delay)
                await self._clock.sleep(delay)
                delay = min(10.0, delay * 2)
                continue
            mine = parts & self._catching_up  # some may have been revoked meanwhile
            resumed = 0
            for entry in self._view.submitted():
                part = Partition(entry.source.topic, entry.source.partition)
                if part in mine and entry.key not in self._book and entry.fal is not None:
                    self._resume(entry)
                    resumed += 1
            self._catching_up -= mine
            self._log.info(
                "partitions_taken_over",
                partitions=sorted(f"{t}/{p}" for t, p in mine),
                jobs_resumed=resumed,
            )
            self._wake.set()
            return

    async def partitions_revoked(self, parts: set[Partition]) -> None:
        self._catching_up -= parts
        self._metrics.rebalances.inc()
        self._log.info("partitions_revoked", partitions=sorted(f"{t}/{p}" for t, p in parts))
        await self._hand_back(parts)
        await self._commit(parts)
        self._offsets.drop(parts)

    async def _hand_back(self, parts: set[Partition] | None) -> None:
        """Let go of work in ``parts`` (all when None), leaving fal jobs running.

        Jobs recorded in the ledger are let go at once (their next owner resumes them). A job
        still being submitted finishes its submit and ledger write and then stops by itself:
        cancelling it could leave a job at fal that no ledger entry names; it is waited for
        up to twice the grace. Results and dead letters being written get the grace. Before
        returning, every write asked for has landed or failed, so nothing of ours lands after
        the next owner has caught up with the ledger.
        """
        if parts is None:
            for task in list(self._take_overs):
                task.cancel()
        works = [(p, w) for (p, _o), w in list(self._work.items()) if parts is None or p in parts]
        self._handing_back |= {p for p, _w in works} if parts is None else parts
        try:
            if not works:
                return
            let_go, submitting = 0, []
            for _part, work in works:
                job = self._book.get(work.request_id) if work.request_id else None
                if job is not None and job.state is JobState.RECEIVED:
                    submitting.append(work.task)
                elif job is not None and job.holds_slot:
                    work.task.cancel()
                    let_go += 1
            grace = self._config.shutdown_grace
            tasks = [w.task for _p, w in works]
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            late = [t for t in pending if t not in submitting]
            for task in late:
                task.cancel()
            still_submitting = [t for t in pending if t in submitting]
            if still_submitting:
                _done, stuck = await asyncio.wait(still_submitting, timeout=grace)
                for task in stuck:  # fal never answered: the one window left (README)
                    task.cancel()
            if pending:
                await asyncio.wait(pending)
            self._log.info("work_handed_back", jobs_left_at_fal=let_go, unfinished_writes=len(late))
        finally:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.shutdown_grace):
                    await self._outbox.flush()
            if parts is not None:
                self._handing_back -= parts


class _Webhooks:
    """Verified webhooks, matched to the jobs waiting for them by fal request id. One that
    arrives before its job waits for it (a fast job) is kept a while (bounded)."""

    def __init__(self, keep_early: int = 10_000) -> None:
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._early: dict[str, dict[str, Any]] = {}
        self._keep_early = keep_early

    def expect(self, fal_request_id: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        early = self._early.pop(fal_request_id, None)
        if early is not None:
            future.set_result(early)
        self._waiting[fal_request_id] = future
        return future

    def deliver(self, fal_request_id: str, body: dict[str, Any]) -> None:
        future = self._waiting.get(fal_request_id)
        if future is not None:
            if not future.done():
                future.set_result(body)
            return
        self._early[fal_request_id] = body
        if len(self._early) > self._keep_early:
            del self._early[next(iter(self._early))]

    def forget(self, fal_request_id: str) -> None:
        future = self._waiting.pop(fal_request_id, None)
        if future is not None and not future.done():
            future.cancel()


def _from_webhook(body: dict[str, Any]) -> tuple[FalStatus, FalOutput | None]:
    """fal's webhook body: {"status": "OK", "payload": output} or {"status": "ERROR", ...}.
    An OK payload with a video is the result itself; anything else is fetched from fal, whose
    answer to the result call carries the status code the error mapping needs."""
    payload = body.get("payload")
    if body.get("status") == "OK" and isinstance(payload, dict):
        video = payload.get("video")
        if isinstance(video, dict) and isinstance(video.get("url"), str):
            seed = payload.get("seed")
            output = FalOutput(video=video, seed=seed if isinstance(seed, int) else None)
            return FalStatus(FalPhase.COMPLETED), output
    error_type = payload.get("error_type") if isinstance(payload, dict) else None
    error = body.get("error")
    return (
        FalStatus(
            FalPhase.COMPLETED,
            error=str(error) if error is not None else None,
            error_type=str(error_type) if error_type is not None else None,
        ),
        None,
    )


def _run_seconds(event: ResultEvent) -> float | None:
    t = event.timings
    if t.started_at is None or t.completed_at is None:
        return None
    return round((t.completed_at - t.started_at).total_seconds(), 3)


def _shape(request: VideoRequest) -> str:
    """What a job's run time depends on: jobs of one shape take about as long."""
    i = request.input
    return f"{i.resolution}|{i.aspect_ratio}|{i.num_frames}|{i.num_inference_steps}"


def _ms(at: datetime) -> datetime:
    """Ledger times are kept to the millisecond, as they are written, so an entry compares
    equal to itself read back (see ``_write``)."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _error_info(err: RelayError) -> ErrorInfo:
    return ErrorInfo(
        code=err.code, message=err.message, retryable=err.retryable, details=err.details
    )


def _event(
    job: Job,
    metadata: dict[str, Any] | None,
    *,
    status: str | None = None,
    output: FalOutput | None = None,
    error: ErrorInfo | None = None,
) -> ResultEvent:
    """The contract's result event for a terminal job."""
    video = Video.model_validate(dict(output.video)) if output is not None else None
    return ResultEvent(
        request_id=job.request_id,
        status=status or ("succeeded" if output is not None else "failed"),
        video=video,
        seed=output.seed if output is not None else None,
        error=error,
        fal_request_id=job.fal_request_id,
        metadata=metadata,
        timings=Timings(
            received_at=job.received_at,
            submitted_at=job.submitted_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
        ),
    )
