"""The relay loop: fetch -> validate -> submit -> watch -> publish -> commit.

It owns the concurrency of the service, in one place: one TaskGroup holds a task per record
being worked on; the intake loop never blocks on a slot (at the limit it pauses the partitions
and keeps polling); offsets are committed only for the contiguous finished prefix of each
partition, and a record is finished only once its result event (or dead-letter copy) is
acknowledged by Kafka. It knows the ports (``service.ports``), not aiokafka or httpx.

Shutdown (``request_stop``): stop intake; abandon jobs still waiting on fal (they are taken
up again from the last commit on the next start); give records whose result is being
published ``shutdown_grace`` seconds; commit what is finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from service.core.intake import plan_intake
from service.core.jobs import Job, JobBook, JobEvent
from service.core.offsets import OffsetBook, Partition, commit_due
from service.core.polling import PollSchedule
from service.errors import FalError, FalTimeout, RelayError
from service.logs import get_logger
from service.messages import (
    ErrorInfo,
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
    Outbox,
    VideoJobs,
)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    max_in_flight: int
    poll: PollSchedule = field(default_factory=PollSchedule)
    job_timeout: float = 3600.0
    shutdown_grace: float = 10.0
    commit_interval: float = 1.0
    dedupe_capacity: int = 100_000
    fetch_timeout: float = 0.5
    idle_poll: float = 1.0
    publish_backoff: tuple[float, float] = (0.2, 5.0)

    @property
    def max_unfinished(self) -> int:
        # Finished jobs whose results are not yet acknowledged may add up to one more limit's
        # worth before intake stops: enough to keep fal busy while Kafka acks, and bounded.
        return 2 * self.max_in_flight


@dataclass(slots=True)
class _Work:
    task: asyncio.Task[None]
    request_id: str | None


class Relay:
    def __init__(
        self,
        *,
        inbox: Inbox,
        outbox: Outbox,
        fal: VideoJobs,
        clock: Clock,
        metrics: RelayMetrics,
        config: RelayConfig,
    ) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._fal = fal
        self._clock = clock
        self._metrics = metrics
        self._config = config
        self._book = JobBook(config.max_in_flight, config.dedupe_capacity)
        self._offsets = OffsetBook()
        self._work: dict[tuple[Partition, int], _Work] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._paused = False
        self._last_commit_at = clock.monotonic()
        self._tg: asyncio.TaskGroup | None = None
        self._log = get_logger()
        self.running = False
        self.last_loop_at = clock.monotonic()
        metrics.max_in_flight.set(config.max_in_flight)
        metrics.jobs_in_flight.set_function(lambda: self._book.in_flight)

    @property
    def in_flight(self) -> int:
        """Jobs holding a fal slot right now."""
        return self._book.in_flight

    # --- lifecycle ------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Work until ``request_stop``; then hand back, commit and return."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self.running = True
            try:
                await self._intake_loop()
            finally:
                self.running = False
                await self._hand_back(None)
        await self._commit(None)
        self._log.info("relay_stopped", committed=True)

    # --- intake ---------------------------------------------------------------------------

    async def _intake_loop(self) -> None:
        cfg = self._config
        while not self._stopping:
            self.last_loop_at = self._clock.monotonic()
            self._wake.clear()
            plan = plan_intake(self._book.free_slots, self._offsets.unfinished, cfg.max_unfinished)
            if plan.pause:
                # Re-applied every turn: partitions assigned since the last turn start unpaused.
                self._inbox.pause()
                self._set_paused(True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(cfg.idle_poll):
                        await self._wake.wait()
                # Keep polling while saturated, or the group drops us after max_poll_interval.
                records = await self._inbox.fetch(max_records=1, max_wait=0)
            else:
                if self._paused:
                    self._inbox.resume()
                    self._set_paused(False)
                records = await self._inbox.fetch(
                    max_records=plan.fetch, max_wait=cfg.fetch_timeout
                )
            self._take(records)
            now = self._clock.monotonic()
            if commit_due(now, self._last_commit_at, cfg.commit_interval, True):
                await self._commit(None)

    def _set_paused(self, paused: bool) -> None:
        if paused != self._paused:
            self._paused = paused
            self._metrics.partitions_paused.set(int(paused))
            self._log.debug(
                "intake_paused" if paused else "intake_resumed", in_flight=self._book.in_flight
            )

    def _take(self, records: list[InboundRecord]) -> None:
        """Start work on each record; rewind a partition at the first one that has no slot."""
        blocked: set[Partition] = set()
        for record in records:
            part = record.part
            if part in blocked:
                continue
            decoded = decode_request(record.value)
            if isinstance(decoded, Rejection):
                self._offsets.track(part, record.offset)
                self._spawn(record, None, self._reject(record, decoded))
            elif self._book.is_duplicate(decoded.request_id):
                self._metrics.duplicates.inc()
                self._log.info(
                    "duplicate_request_skipped",
                    request_id=decoded.request_id,
                    partition=record.partition,
                    offset=record.offset,
                )
                self._offsets.track(part, record.offset)
                self._offsets.finish(part, record.offset)
            elif self._book.free_slots <= 0:
                # Fetched past the limit (a partition assigned while paused): take it later.
                self._inbox.rewind(record)
                blocked.add(part)
                continue
            else:
                self._book.admit(Job(decoded.request_id, received_at=self._clock.now()))
                self._offsets.track(part, record.offset)
                self._spawn(record, decoded.request_id, self._run_job(record, decoded))
            self._metrics.requests_consumed.inc()

    def _spawn(
        self, record: InboundRecord, request_id: str | None, work: Coroutine[Any, Any, None]
    ) -> None:
        assert self._tg is not None
        key = (record.part, record.offset)
        task = self._tg.create_task(work)
        self._work[key] = _Work(task, request_id)
        task.add_done_callback(lambda _t: self._work.pop(key, None))

    def _finish(self, record: InboundRecord) -> None:
        self._offsets.finish(record.part, record.offset)
        self._wake.set()

    # --- one valid request ----------------------------------------------------------------

    async def _run_job(self, record: InboundRecord, request: VideoRequest) -> None:
        rid = request.request_id
        log = self._log.bind(request_id=rid)
        try:
            try:
                event = await self._drive(request, log)
            except Exception as exc:  # a bug, never input: the request still gets its event
                log.exception("job_crashed")
                job = self._book.get(rid)
                assert job is not None
                if job.holds_slot:
                    job = self._terminal(rid, JobEvent.FAILED)
                event = _event(
                    job,
                    request,
                    status="failed",
                    error=ErrorInfo(
                        code="internal_error",
                        message=f"relay error: {type(exc).__name__}",
                        retryable=True,
                    ),
                )
            self._wake.set()  # a slot is free
            await self._publish(event, log)
            self._book.release(rid, finished=True)
            self._finish(record)
            self._metrics.results.labels(
                event.status, event.error.code if event.error else "none"
            ).inc()
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
            if self._book.get(rid) is not None:
                self._book.release(rid, finished=False)
            raise

    async def _drive(self, request: VideoRequest, log: Any) -> ResultEvent:
        """Submit, watch and fetch; every failure becomes a failed (or cancelled) event."""
        rid = request.request_id
        handle: FalJobHandle | None = None
        try:
            async with asyncio.timeout(self._config.job_timeout):
                handle = await self._fal.submit(request.input.to_fal_arguments())
                self._book.advance(
                    rid, JobEvent.SUBMITTED, self._clock.now(), fal_request_id=handle.request_id
                )
                self._metrics.fal_submissions.inc()
                log = log.bind(fal_request_id=handle.request_id)
                log.info("job_submitted")
                status = await self._watch(rid, handle)
                return await self._collect(request, handle, status)
        except TimeoutError:
            if handle is not None:
                await self._cancel_quietly(handle, log)
            err: FalError = FalTimeout(
                f"no result within RELAY_JOB_TIMEOUT_S={self._config.job_timeout:g}s"
            )
        except FalError as exc:
            err = exc
        log.warning("job_failed", error_code=err.code, error=err.message)
        job = self._terminal(rid, JobEvent.FAILED)
        return _event(job, request, error=_error_info(err))

    async def _watch(self, rid: str, handle: FalJobHandle) -> FalStatus:
        started = self._clock.monotonic()
        while True:
            status = await self._fal.status(handle)
            now = self._clock.now()
            if status.phase is FalPhase.QUEUED:
                self._book.advance(rid, JobEvent.QUEUED, now, queue_position=status.queue_position)
            elif status.phase is FalPhase.RUNNING:
                self._book.advance(rid, JobEvent.STARTED, now)
            else:
                self._book.advance(
                    rid, JobEvent.COMPLETED, now, inference_time=status.inference_time
                )
                return status
            elapsed = self._clock.monotonic() - started
            await self._clock.sleep(self._config.poll.next_delay(elapsed))

    async def _collect(
        self, request: VideoRequest, handle: FalJobHandle, status: FalStatus
    ) -> ResultEvent:
        rid = request.request_id
        job = self._book.get(rid)
        assert job is not None
        if job.submitted_at and job.started_at:
            self._metrics.queue_wait.observe((job.started_at - job.submitted_at).total_seconds())
        if job.started_at and job.completed_at:
            self._metrics.run_time.observe((job.completed_at - job.started_at).total_seconds())
        if status.error_type == "client_cancelled":
            job = self._terminal(rid, JobEvent.CANCELLED)
            return _event(
                job,
                request,
                status="cancelled",
                error=ErrorInfo(
                    code="cancelled",
                    message=status.error or "the job was cancelled at fal",
                    retryable=False,
                    details={"error_type": status.error_type},
                ),
            )
        output = await self._fal.result(handle)  # raises FalError when the job failed
        job = self._terminal(rid, JobEvent.SUCCEEDED)
        return _event(job, request, output=output)

    def _terminal(self, rid: str, event: JobEvent) -> Job:
        return self._book.advance(rid, event, self._clock.now())

    async def _cancel_quietly(self, handle: FalJobHandle, log: Any) -> None:
        # Nobody will take this result, so stop paying for it; failure here changes nothing.
        try:
            async with asyncio.timeout(10):
                await self._fal.cancel(handle)
        except (FalError, TimeoutError) as exc:
            log.warning("fal_cancel_failed", error=str(exc))

    # --- one invalid message --------------------------------------------------------------

    async def _reject(self, record: InboundRecord, rejection: Rejection) -> None:
        log = self._log.bind(
            request_id=rejection.request_id, partition=record.partition, offset=record.offset
        )
        await self._with_retry(
            lambda: self._outbox.dead_letter(record, rejection.reason, rejection.message),
            "dead_letter",
            log,
        )
        self._metrics.dead_letters.inc()
        self._metrics.requests_rejected.labels(rejection.reason).inc()
        if rejection.request_id is not None:
            now = self._clock.now()
            event = ResultEvent(
                request_id=rejection.request_id,
                status="failed",
                error=ErrorInfo(
                    code="invalid_request",
                    message=rejection.message,
                    retryable=False,
                    details=rejection.details,
                ),
                timings=Timings(received_at=now, completed_at=now),
            )
            await self._publish(event, log)
            self._metrics.results.labels("failed", "invalid_request").inc()
        log.info("request_rejected", reason=rejection.reason, error=rejection.message)
        self._finish(record)

    # --- Kafka writes and commits ---------------------------------------------------------

    async def _publish(self, event: ResultEvent, log: Any) -> None:
        await self._with_retry(lambda: self._outbox.publish_result(event), "results", log)

    async def _with_retry(self, write: Any, kind: str, log: Any) -> None:
        """Never drop a write: retry with capped backoff until acknowledged (or cancelled)."""
        delay, cap = self._config.publish_backoff
        while True:
            try:
                await write()
            except Exception as exc:  # aiokafka raises many types; every one means "not acked"
                self._metrics.publish_failures.labels(kind).inc()
                log.warning(
                    "kafka_write_failed", topic_kind=kind, error=repr(exc), retry_in_s=delay
                )
                await self._clock.sleep(delay)
                delay = min(cap, delay * 2)
            else:
                return

    async def _commit(self, parts: Iterable[Partition] | None) -> None:
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
        self._metrics.rebalances.inc()
        self._log.info("partitions_assigned", partitions=sorted(f"{t}/{p}" for t, p in parts))

    async def partitions_revoked(self, parts: set[Partition]) -> None:
        self._metrics.rebalances.inc()
        self._log.info("partitions_revoked", partitions=sorted(f"{t}/{p}" for t, p in parts))
        await self._hand_back(parts)
        await self._commit(parts)
        self._offsets.drop(parts)

    async def _hand_back(self, parts: set[Partition] | None) -> None:
        """Abandon jobs still at fal; let acknowledged-soon writes finish within the grace."""
        works = [w for (p, _o), w in list(self._work.items()) if parts is None or p in parts]
        if not works:
            return
        abandoned = 0
        for work in works:
            job = self._book.get(work.request_id) if work.request_id else None
            if job is not None and job.holds_slot:
                work.task.cancel()
                abandoned += 1
        tasks = [w.task for w in works]
        _done, pending = await asyncio.wait(tasks, timeout=self._config.shutdown_grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        self._log.info("work_handed_back", abandoned_jobs=abandoned, unfinished_writes=len(pending))


def _error_info(err: RelayError) -> ErrorInfo:
    return ErrorInfo(
        code=err.code, message=err.message, retryable=err.retryable, details=err.details
    )


def _event(
    job: Job,
    request: VideoRequest,
    *,
    status: str | None = None,
    output: FalOutput | None = None,
    error: ErrorInfo | None = None,
) -> ResultEvent:
    """The contract's result event for a terminal job."""
    video = Video.model_validate(dict(output.video)) if output is not None else None
    return ResultEvent(
        request_id=request.request_id,
        status=status or ("succeeded" if output is not None else "failed"),
        video=video,
        seed=output.seed if output is not None else None,
        error=error,
        fal_request_id=job.fal_request_id,
        metadata=request.metadata,
        timings=Timings(
            received_at=job.received_at,
            submitted_at=job.submitted_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
        ),
    )
