"""Offsets: which records are being worked on, and committing the finished prefix.

The core's ``OffsetBook`` says what may be committed; this unit asks it, one commit at a
time (a slower, older commit must never land after a newer one), at the cadence the core's
``commit_due`` sets, and on hand-back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from service.core.offsets import OffsetBook, Partition, commit_due
from service.ports import Inbox
from service.relay.tools import Tools


class Commits:
    def __init__(
        self,
        tools: Tools,
        *,
        inbox: Inbox,
        interval: float,
        on_finish: Callable[[], None],
    ) -> None:
        self._inbox = inbox
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._log = tools.log
        self._interval = interval
        self._on_finish = on_finish
        self._offsets = OffsetBook()
        self._lock = asyncio.Lock()
        self._last_at = tools.clock.monotonic()

    @property
    def unfinished(self) -> int:
        return self._offsets.unfinished

    def track(self, part: Partition, offset: int) -> None:
        """A record is being worked on: no commit passes it until it is finished."""
        self._offsets.track(part, offset)

    def finish(self, part: Partition, offset: int) -> None:
        self._offsets.finish(part, offset)
        self._on_finish()

    async def maybe_commit(self) -> None:
        if commit_due(self._clock.monotonic(), self._last_at, self._interval, True):
            await self.commit(None)

    async def commit(self, parts: Iterable[Partition] | None) -> None:
        """Commit the finished prefix of ``parts`` (all when None); a failure is logged and
        counted, and the next commit carries the same offsets."""
        async with self._lock:
            self._last_at = self._clock.monotonic()
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

    def drop(self, parts: Iterable[Partition]) -> None:
        """Forget partitions that are no longer ours."""
        self._offsets.drop(parts)
