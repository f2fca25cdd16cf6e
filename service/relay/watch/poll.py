"""Polling fal for a job's status, on the core's ``PollSchedule`` (and the safety net of the
other watch modes)."""

from __future__ import annotations

from service.core.polling import PollSchedule
from service.errors import FalUnavailable
from service.ports import Clock, FalOutput, FalStatus, VideoJobs
from service.relay.key_gate import KeyGate
from service.relay.watch import Watch


class PollWatcher:
    def __init__(self, fal: VideoJobs, gate: KeyGate, clock: Clock, schedule: PollSchedule) -> None:
        self._fal = fal
        self._gate = gate
        self._clock = clock
        self._schedule = schedule

    async def watch(self, job: Watch) -> tuple[FalStatus, FalOutput | None]:
        return await self.until_done(job), None

    async def until_done(self, job: Watch) -> FalStatus:
        started = self._clock.monotonic()
        if job.fresh:
            # fal's answer to the submit said IN_QUEUE a moment ago: asking again at once would
            # be a call that tells nothing (a resumed job, in contrast, may be long done).
            await self._clock.sleep(self._schedule.next_delay(0.0))
        while True:
            status = await self.poll_once(job)
            if status is not None:
                return status
            since = job.running_since()
            running_for = (self._clock.now() - since).total_seconds() if since else None
            delay = self._schedule.next_delay(
                self._clock.monotonic() - started, running_for, job.expected
            )
            await self._clock.sleep(delay)

    async def poll_once(self, job: Watch) -> FalStatus | None:
        """One status call: the final status once fal says the job is done, else None."""
        try:
            status = await self._gate.call(lambda: self._fal.status(job.ref), job.log)
        except FalUnavailable as exc:
            # The job is at fal and paid for: a fal outage is waited out (until the job
            # timeout), not turned into a failure that abandons a running job.
            job.log.warning("fal_status_unavailable", error=exc.message)
            return None
        return status if job.note(status) else None
