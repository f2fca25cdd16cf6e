"""Progress events of a job (queued with its position, started, fal's log lines), as many as
the core's ``ProgressGate`` lets through; published best effort with the next transaction."""

from __future__ import annotations

from datetime import datetime

from service.core.progress import ProgressGate
from service.messages import ProgressEvent, ProgressLog
from service.ports import Clock, FalPhase, FalStatus, Outbox
from service.relay.context import JobContext


class ProgressReporter:
    def __init__(self, outbox: Outbox, clock: Clock, min_interval: float, max_logs: int) -> None:
        self._outbox = outbox
        self._clock = clock
        self._min_interval = min_interval
        self._max_logs = max_logs

    def report(
        self, ctx: JobContext, fal_request_id: str | None, status: FalStatus, now: datetime
    ) -> None:
        if ctx.progress is None:
            ctx.progress = ProgressGate(self._min_interval, self._max_logs)
        gate = ctx.progress
        tick = self._clock.monotonic()
        rid = ctx.request_id
        out: list[ProgressEvent] = []
        if status.phase is FalPhase.QUEUED and gate.queued(status.queue_position, tick):
            out.append(
                ProgressEvent(
                    request_id=rid,
                    fal_request_id=fal_request_id,
                    event="queued",
                    queue_position=status.queue_position,
                    at=now,
                )
            )
        if status.phase is not FalPhase.QUEUED and gate.started():
            out.append(
                ProgressEvent(
                    request_id=rid, fal_request_id=fal_request_id, event="started", at=now
                )
            )
        fresh = status.logs[ctx.logs_seen :]  # fal sends all of a job's lines so far each time
        ctx.logs_seen = len(status.logs)
        for line in fresh[: gate.logs(len(fresh), tick)]:
            out.append(
                ProgressEvent(
                    request_id=rid,
                    fal_request_id=fal_request_id,
                    event="log",
                    at=now,
                    log=ProgressLog(
                        message=line.message, level=line.level, timestamp=line.timestamp
                    ),
                )
            )
        for event in out:
            self._outbox.progress(event)
