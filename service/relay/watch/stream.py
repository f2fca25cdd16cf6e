"""fal's status stream: one connection per job, reconnecting when it drops; after three
failures in a row the job is polled instead. A stream that ends before the job did counts as
a failure too: otherwise a server that closes at once would be reconnected to in a hot loop."""

from __future__ import annotations

from service.core.backoff import Backoff
from service.errors import FalError
from service.ports import Clock, FalOutput, FalStatus, VideoJobs
from service.relay.watch import Watch
from service.relay.watch.poll import PollWatcher

_MAX_FAILURES = 3


class StreamWatcher:
    def __init__(self, fal: VideoJobs, clock: Clock, poller: PollWatcher) -> None:
        self._fal = fal
        self._clock = clock
        self._poller = poller

    async def watch(self, job: Watch) -> tuple[FalStatus, FalOutput | None]:
        status = await self._stream(job)
        if status is None:
            status = await self._poller.until_done(job)
        return status, None

    async def _stream(self, job: Watch) -> FalStatus | None:
        failures = 0
        backoff = Backoff(0.5, 5.0)
        while failures < _MAX_FAILURES:
            try:
                async for status in self._fal.stream(job.ref):
                    failures = 0
                    backoff.reset()
                    if job.note(status):
                        return status
                error = "the stream ended before the job did"
            except FalError as exc:
                error = exc.message
            failures += 1
            job.log.warning("fal_stream_dropped", error=error, failures=failures)
            await self._clock.sleep(backoff.next())
        job.log.warning("fal_stream_unusable_polling_instead")
        return None
