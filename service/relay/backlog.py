"""The backlog: requests read ahead of fal, waiting for a slot, and their dispatch.

The choice of who goes next is the core's ``Scheduler`` (priorities, aging, weighted fair
shares by cost between tenants); this unit feeds it, keeps the bodies it may (a byte budget,
``RELAY_BACKLOG_BODY_BYTES``: beyond it a body is read again from Kafka at its turn), asks it
whenever a slot is free, and hands each chosen record back to be decided once more and
started. A tenant at its ``max_concurrent`` is passed over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from service.core.offsets import Partition
from service.core.scheduler import Scheduler, Waiting, job_cost
from service.messages import VideoRequest
from service.ports import InboundRecord, Inbox
from service.relay.context import Jobs
from service.relay.tools import Tools
from service.tenants import Tenants


class Backlog:
    def __init__(
        self,
        tools: Tools,
        *,
        inbox: Inbox,
        jobs: Jobs,
        tenants: Tenants,
        max_requests: int,
        body_bytes: int,
        aging: float,
        budget_allows: Callable[[str], bool] | None = None,
    ) -> None:
        self._inbox = inbox
        self._budget_allows = budget_allows  # None: no budget holds anyone back
        self._jobs = jobs
        self._tenants = tenants
        self._max = max_requests
        self._body_budget = body_bytes
        self._names: dict[str, str] = {}
        self._epochs: dict[Partition, int] = {}  # bumped when a partition's requests are dropped
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._log = tools.log
        # Without per-tenant limits the scheduler need not ask (the common case, and cheaper).
        limited = (
            budget_allows is not None
            or tenants.default.max_concurrent is not None
            or any(p.max_concurrent is not None for p in tenants.tenants.values())
        )
        self._may_start = self.may_start if limited else None
        self._scheduler = Scheduler(
            tenants.weights(), default_weight=tenants.default.weight, aging=aging
        )
        # Every tenant's series from the start, at zero (rate() sees a tenant's first start).
        # The gauges are read when /metrics is scraped, not kept up to date on the hot path.
        for label in tenants.labels():
            self._metrics.tenant_starts.labels(label)
            self._metrics.tenant_wait.labels(label)
            self._metrics.tenant_waiting.labels(label).set_function(
                self._per_label(self._scheduler.waiting_by_tenant, label)
            )
            self._metrics.tenant_running.labels(label).set_function(
                self._per_label(self._jobs.by_tenant, label)
            )

    def __len__(self) -> int:
        return len(self._scheduler)

    @property
    def room(self) -> int:
        return self._max - len(self._scheduler)

    def may_start(self, tenant: str) -> bool:
        limit = self._tenants.policy(tenant).max_concurrent
        if limit is not None and self._jobs.held_by(tenant) >= limit:
            return False
        return self._budget_allows is None or self._budget_allows(tenant)

    def start_now(self, request: VideoRequest) -> bool:
        """Whether a new request may skip the backlog: nothing waits and a slot is free."""
        return (
            len(self._scheduler) == 0
            and self._jobs.free_slots > 0
            and self.may_start(request.tenant_name)
        )

    def add(self, record: InboundRecord, request: VideoRequest) -> None:
        # One string object per tenant, not one per waiting request.
        tenant = self._names.setdefault(request.tenant_name, request.tenant_name)
        options = request.options
        size = len(record.value or b"")
        keep = self._scheduler.body_bytes + size <= self._body_budget
        i = request.input
        self._scheduler.add(
            Waiting(
                place=record.part,
                offset=record.offset,
                request_id=request.request_id,
                tenant=tenant,
                priority=self._tenants.policy(tenant).priority(
                    options.priority if options else None
                ),
                cost=job_cost(i.num_frames, i.frames_per_second),
                since=self._clock.monotonic(),
                body=record.value if keep else None,
            )
        )

    async def dispatch(self, turn: Callable[[InboundRecord, datetime, float], None]) -> None:
        """While a slot is free, the scheduler's next request to ``turn`` (with the seconds it
        waited). A body that cannot be read now puts its request back, for the next call."""
        while self._jobs.free_slots > 0:
            item = self._scheduler.pick(self._clock.monotonic(), self._may_start)
            if item is None:
                return
            epoch = self._epochs.get(item.place, 0)
            record = await self._record_of(item)
            if record is None:
                return
            if self._epochs.get(item.place, 0) != epoch:
                continue  # its partition was revoked while its body was read: not ours now
            turn(record, self._clock.now(), self._clock.monotonic() - item.since)

    async def _record_of(self, item: Waiting) -> InboundRecord | None:
        if item.body is not None:
            return InboundRecord(
                item.place.topic, item.place.partition, item.offset, None, item.body
            )
        try:
            record = await self._inbox.read(item.place, item.offset)
        except Exception as exc:  # Kafka cannot answer now: it waits for the next turn
            self._log.warning("backlog_read_failed", request_id=item.request_id, error=repr(exc))
            self._scheduler.add(item)
            return None
        if record is None:
            # Gone from the log (retention passed while it waited): the request is lost to
            # us; say so loudly. Its offset is finished so the partition moves on.
            self._log.error(
                "backlog_record_gone",
                request_id=item.request_id,
                partition=item.place.partition,
                offset=item.offset,
            )
            return InboundRecord(item.place.topic, item.place.partition, item.offset, None, None)
        return record

    def drop(self, parts: Iterable[Partition] | None) -> None:
        """Forget the waiting requests of partitions no longer ours (all when None)."""
        if parts is None:
            parts = {w.place for w in self._scheduler}
        for part in parts:
            self._epochs[part] = self._epochs.get(part, 0) + 1
        self._scheduler.drop(parts)

    def _per_label(
        self, by_tenant: Callable[[], dict[str, int]], label: str
    ) -> Callable[[], float]:
        """How many of ``by_tenant``'s count under the metric label ``label``."""
        tenants = self._tenants
        return lambda: sum(n for t, n in by_tenant().items() if tenants.label(t) == label)
