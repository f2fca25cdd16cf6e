"""The relay's tasks, in one place: one task per record being worked on (a job, a dead
letter, a cancel), keyed by the record's place, plus the background tasks of a partition
take-over. All run in the relay's one TaskGroup, so an unexpected error stops the relay
instead of vanishing."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from service.core.offsets import Partition


@dataclass(slots=True)
class Work:
    part: Partition
    request_id: str | None  # the job's, or None for a dead letter or a cancel
    task: asyncio.Task[None]


class WorkBoard:
    def __init__(self) -> None:
        self._group: asyncio.TaskGroup | None = None
        self.accepting = False  # new take-overs are started (not while stopping)
        self._work: dict[tuple[Partition, int], Work] = {}
        self._background: set[asyncio.Task[None]] = set()

    def open(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        self.accepting = True

    def stop_accepting(self) -> None:
        """Stopping: no new take-over starts (work already started may still spawn)."""
        self.accepting = False

    def spawn(
        self,
        part: Partition,
        offset: int,
        request_id: str | None,
        work: Coroutine[Any, Any, None],
    ) -> None:
        """Work for the record at (part, offset)."""
        assert self._group is not None, "the relay is not running"
        key = (part, offset)
        task = self._group.create_task(work)
        self._work[key] = Work(part, request_id, task)
        task.add_done_callback(lambda _t: self._work.pop(key, None))

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Work for no one record (a take-over); cancelled on shutdown."""
        assert self._group is not None, "the relay is not running"
        task = self._group.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def of(self, parts: Iterable[Partition] | None) -> list[Work]:
        """The work of records in ``parts`` (all of it when None)."""
        wanted = None if parts is None else set(parts)
        return [w for w in list(self._work.values()) if wanted is None or w.part in wanted]

    def cancel_background(self) -> None:
        for task in list(self._background):
            task.cancel()
