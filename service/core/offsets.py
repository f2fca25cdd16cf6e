"""Out-of-order completion in, contiguous committable offsets out.

Records of a partition are handed out in offset order and finish in any order. The offset
that may be committed is one past the last record of the finished prefix, so a commit never
passes a record that is still being worked on, and it never goes back.
Offsets need not be consecutive integers (compaction and transaction markers leave gaps):
"contiguous" means contiguous among the records we were given.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple


class Partition(NamedTuple):
    topic: str
    partition: int


class PartitionOffsets:
    """The tracked and finished offsets of one partition."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._finished: set[int] = set()
        self._last_tracked = -1
        self._done_up_to: int | None = None  # committable offset (last finished prefix + 1)
        self._committed: int | None = None

    def track(self, offset: int) -> None:
        if offset <= self._last_tracked:
            raise ValueError(f"offset {offset} tracked after {self._last_tracked}")
        self._last_tracked = offset
        self._pending.append(offset)

    def finish(self, offset: int) -> None:
        if offset not in self._pending or offset in self._finished:
            raise ValueError(f"offset {offset} is not pending")
        self._finished.add(offset)
        while self._pending and self._pending[0] in self._finished:
            done = self._pending.popleft()
            self._finished.discard(done)
            self._done_up_to = done + 1

    @property
    def unfinished(self) -> int:
        return len(self._pending) - len(self._finished)

    def committable(self) -> int | None:
        """The offset to commit now, if it is ahead of the last one committed."""
        if self._done_up_to is None:
            return None
        if self._committed is not None and self._done_up_to <= self._committed:
            return None
        return self._done_up_to

    def mark_committed(self, offset: int) -> None:
        if self._committed is None or offset > self._committed:
            self._committed = offset


class OffsetBook:
    """``PartitionOffsets`` for every partition currently assigned."""

    def __init__(self) -> None:
        self._parts: dict[Partition, PartitionOffsets] = {}

    def track(self, part: Partition, offset: int) -> None:
        self._parts.setdefault(part, PartitionOffsets()).track(offset)

    def finish(self, part: Partition, offset: int) -> None:
        self._parts[part].finish(offset)

    def committable(self, only: Iterable[Partition] | None = None) -> dict[Partition, int]:
        parts = (
            self._parts if only is None else {p: self._parts[p] for p in only if p in self._parts}
        )
        return {p: o for p, po in parts.items() if (o := po.committable()) is not None}

    def mark_committed(self, offsets: dict[Partition, int]) -> None:
        for part, offset in offsets.items():
            if part in self._parts:
                self._parts[part].mark_committed(offset)

    def drop(self, parts: Iterable[Partition]) -> None:
        """Forget partitions that are no longer ours."""
        for part in parts:
            self._parts.pop(part, None)

    @property
    def unfinished(self) -> int:
        return sum(po.unfinished for po in self._parts.values())


def commit_due(now: float, last_commit_at: float, interval: float, pending: bool) -> bool:
    """Commit when there is progress and ``interval`` seconds passed since the last commit."""
    return pending and now - last_commit_at >= interval
