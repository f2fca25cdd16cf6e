"""Who goes next to fal: a backlog of waiting requests and the choice among them.

Theory of operation. Intake reads ahead into a local backlog; when a fal slot frees, the
relay asks ``Scheduler.pick`` for the next request. The backlog holds an index entry per
request (``Waiting``: its place, request_id, tenant, priority, cost, arrival), not the
request itself: its body is kept only while the bodies kept stay within a byte budget, and
is read again from Kafka when it is dispatched otherwise. So a replica can hold a deep
backlog (100,000 requests in a few tens of MiB) while the bodies may be up to 1 MiB each.

The choice, in order:

1. **Strict priority classes** ``high`` > ``normal`` > ``low``: the highest class with a
   request that may start goes first.
2. **Aging**, so that a lower class never starves: a request that has waited ``aging``
   seconds per class it stands below the class being served is *overdue*, and overdue
   requests go first, oldest first. A ``low`` request under sustained ``normal`` load thus
   starts within ``aging`` seconds of the moment a slot frees after that.
3. **Weighted deficit round robin over tenants** inside the class, by *cost*, not by count
   (what a job is expected to bill: its seconds of video, see ``job_cost``): counting
   jobs would favour tenants with big ones. Each tenant's quantum is its weight times
   ``quantum`` (default 1: one second of video, a fifth of a default job, so turns
   interleave finely); a tenant whose next request costs more than its deficit waits for
   more rounds, which are added all at once (the rounds in which nobody could start), so a
   decision costs O(tenants), never O(backlog). Over a stretch of starts each tenant's
   cost is off its share by at most about one job's cost plus its quantum.

A tenant at its concurrency limit (``may_start`` says no) is passed over and gains nothing
while it is, as in DRR a flow with nothing to send. Commits stay contiguous: a waiting
record holds its partition's commit, and the ledger makes a redelivery after a crash safe.
"""

from __future__ import annotations

import enum
import functools
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from service.core.cost import expected_units
from service.core.offsets import Partition


class Priority(enum.IntEnum):
    HIGH = 0
    NORMAL = 1
    LOW = 2

    @classmethod
    def named(cls, name: str | None) -> Priority:
        return cls[name.upper()] if name else cls.NORMAL


@dataclass(slots=True)
class Waiting:
    """One request in the backlog: its index, and its body only while the budget allows."""

    place: Partition
    offset: int
    request_id: str
    tenant: str
    priority: Priority
    cost: float
    since: float  # monotonic seconds when it was read
    body: bytes | None = None  # None: read it again from Kafka when it is dispatched
    taken: bool = False  # picked or dropped (it may still stand in its lane's arrivals)


@functools.cache
def job_cost(num_frames: int | None, frames_per_second: int | None) -> float:
    """What a job costs the account, in fal's billing unit: its seconds of video (fal bills
    Lynx by the second, whatever the resolution), the same estimate budgets use
    (``core.cost.expected_units``). (Cached: a backlog of jobs of few shapes shares a few
    float objects.)"""
    return expected_units(num_frames, frames_per_second)


DEFAULT_COST = job_cost(None, None)


class _Lane:
    """One priority class: a FIFO per tenant, the round robin over them, and every request
    in arrival order (for aging: the oldest is found at the front, past the taken ones)."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[Waiting]] = {}
        self.order: deque[str] = deque()  # tenants with requests, in round-robin order
        self.deficit: dict[str, float] = {}
        self.arrivals: deque[Waiting] = deque()

    def add(self, item: Waiting) -> None:
        queue = self.queues.get(item.tenant)
        if queue is None:
            queue = self.queues[item.tenant] = deque()
            self.order.append(item.tenant)
            self.deficit[item.tenant] = 0.0
        queue.append(item)
        self.arrivals.append(item)

    def take_head(self, tenant: str) -> Waiting:
        queue = self.queues[tenant]
        item = queue.popleft()
        item.taken = True
        if not queue:  # an idle tenant keeps no credit (DRR)
            del self.queues[tenant], self.deficit[tenant]
            self.order.remove(tenant)
        return item

    def oldest(self, may_start: Callable[[str], bool] | None) -> Waiting | None:
        arrivals = self.arrivals
        while arrivals and arrivals[0].taken:
            arrivals.popleft()
        if not arrivals:
            return None
        first = arrivals[0]
        if may_start is None or may_start(first.tenant):
            return first
        heads = [q[0] for t, q in self.queues.items() if may_start(t)]
        return min(heads, key=lambda w: w.since) if heads else None


class Scheduler:
    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        *,
        default_weight: float = 1.0,
        aging: float = 300.0,
        quantum: float = 1.0,
    ) -> None:
        if aging <= 0 or quantum <= 0:
            raise ValueError("aging and quantum must be positive")
        self._weights = dict(weights or {})
        self._default_weight = default_weight
        self._aging = aging
        self._quantum = quantum
        self._quanta: dict[str, float] = {}
        self._classes = tuple(Priority)
        self._lanes = tuple(_Lane() for _ in self._classes)
        self._count = 0
        self.body_bytes = 0  # bytes of the bodies kept

    def __len__(self) -> int:
        return self._count

    def add(self, item: Waiting) -> None:
        item.taken = False
        self._lanes[item.priority].add(item)
        self._count += 1
        if item.body is not None:
            self.body_bytes += len(item.body)

    def pick(self, now: float, may_start: Callable[[str], bool] | None = None) -> Waiting | None:
        """The request to start now, taken out of the backlog; None if none may start.
        ``may_start``: whether a tenant may start one more (None: every tenant may)."""
        served = None
        for priority in self._classes:
            order = self._lanes[priority].order
            if order and (may_start is None or any(may_start(t) for t in order)):
                served = priority
                break
        if served is None:
            return None
        overdue = self._overdue(served, now, may_start)
        if overdue is not None:
            return self._taken(self._lanes[overdue.priority], overdue.tenant)
        return self._round_robin(self._lanes[served], may_start)

    def _overdue(
        self, served: Priority, now: float, may_start: Callable[[str], bool] | None
    ) -> Waiting | None:
        """The oldest request of a lower class that has waited its class distance in aging."""
        best: Waiting | None = None
        for lower in self._classes[served + 1 :]:
            oldest = self._lanes[lower].oldest(may_start)
            if oldest is None or now - oldest.since < self._aging * (lower - served):
                continue
            if best is None or oldest.since < best.since:
                best = oldest
        return best

    def _round_robin(self, lane: _Lane, may_start: Callable[[str], bool] | None) -> Waiting:
        pointer = lane.order[0]
        if (may_start is None or may_start(pointer)) and lane.deficit[pointer] >= lane.queues[
            pointer
        ][0].cost:
            return self._taken(lane, pointer)  # its turn goes on while its deficit lasts
        eligible = [t for t in lane.order if may_start is None or may_start(t)]
        # Rounds in which no eligible tenant could afford its next request, added at once.
        rounds = min(
            max(0, math.ceil((lane.queues[t][0].cost - lane.deficit[t]) / self._quantum_of(t)))
            for t in eligible
        )
        if rounds:
            for tenant in eligible:
                lane.deficit[tenant] += rounds * self._quantum_of(tenant)
        for _ in range(len(lane.order)):
            tenant = lane.order[0]
            if (may_start is None or may_start(tenant)) and lane.deficit[tenant] >= lane.queues[
                tenant
            ][0].cost:
                return self._taken(lane, tenant)
            # Its turn is over: the next tenant's comes, as the pointer of DRR moves on.
            lane.order.rotate(-1)
        raise AssertionError("unreachable: some eligible tenant can afford its next request")

    def _taken(self, lane: _Lane, tenant: str) -> Waiting:
        head = lane.queues[tenant][0]
        lane.deficit[tenant] = max(0.0, lane.deficit[tenant] - head.cost)
        item = lane.take_head(tenant)
        self._count -= 1
        if item.body is not None:
            self.body_bytes -= len(item.body)
        return item

    def _quantum_of(self, tenant: str) -> float:
        quantum = self._quanta.get(tenant)
        if quantum is None:
            weight = self._weights.get(tenant, self._default_weight)
            quantum = self._quanta[tenant] = weight * self._quantum
        return quantum

    def drop(self, places: Iterable[Partition]) -> list[Waiting]:
        """Take out every request of ``places`` (partitions no longer ours)."""
        gone = set(places)
        dropped: list[Waiting] = []
        for lane in self._lanes:
            for tenant in list(lane.order):
                queue = lane.queues[tenant]
                keep = deque(w for w in queue if w.place not in gone)
                for w in queue:
                    if w.place in gone:
                        w.taken = True
                        dropped.append(w)
                lane.queues[tenant] = keep
                if not keep:
                    del lane.queues[tenant], lane.deficit[tenant]
                    lane.order.remove(tenant)
        self._count -= len(dropped)
        self.body_bytes -= sum(len(w.body) for w in dropped if w.body is not None)
        return dropped

    def waiting_by_tenant(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for lane in self._lanes:
            for tenant, queue in lane.queues.items():
                counts[tenant] = counts.get(tenant, 0) + len(queue)
        return counts

    def __iter__(self) -> Iterator[Waiting]:
        for lane in self._lanes:
            for queue in lane.queues.values():
                yield from queue
