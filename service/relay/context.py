"""The jobs this replica holds: one ``JobContext`` per job, and their lifecycle states.

A job's lifecycle state (and so the slot accounting) is the core's ``JobBook``; everything
else the relay keeps for a job while it works on it lives in its context, in one object, so
letting go of a job is one call (``Jobs.release``) that cannot forget a piece.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.core.jobs import Job, JobBook, JobEvent, JobState
from service.core.ledger import FalRef, Source
from service.core.offsets import Partition
from service.core.progress import ProgressGate
from service.core.reconcile import Intent
from service.messages import DEFAULT_TENANT, VideoRequest


@dataclass(slots=True)
class JobContext:
    request_id: str
    source: Source
    log: Any  # the logger bound to request_id (and fal_request_id once known)
    tenant: str = DEFAULT_TENANT
    metadata: dict[str, Any] | None = None
    deadline: datetime | None = None
    shape: str | None = None  # what its run time depends on (see RunTimes)
    expected_units: float | None = None  # what fal will bill if it succeeds (``core.cost``)
    resume: FalRef | None = None  # a job found at fal in the ledger: watched, never submitted
    # Its submit's intent, while fal may or may not have the job (``relay.reconcile``).
    intent: Intent | None = None
    # The request until fal has it; then dropped: a data URI can be megabytes, and a job at
    # fal runs for minutes. Kept while its submit's outcome is unknown (it may be sent again).
    request: VideoRequest | None = None
    # Its record's place in its partition, once fetched (only the place: the record's bytes
    # are not kept for the job's minutes). That offset waits for the job.
    place: tuple[Partition, int] | None = None
    cancel_requested: bool = False  # a cancel came while it was being submitted
    # Its fal job was sent a cancel, by its own task or by the cancel handler: one is enough
    # (both see the cancel when it lands between the submit and its ledger entry).
    cancel_sent: bool = False
    progress: ProgressGate | None = None
    logs_seen: int = 0  # fal sends all of a job's log lines so far each time

    @property
    def part(self) -> Partition:
        return Partition(self.source.topic, self.source.partition)


class Jobs:
    """The contexts and the core's book, kept in step."""

    def __init__(self, limit: int) -> None:
        self._book = JobBook(limit)
        self._contexts: dict[str, JobContext] = {}
        self._by_tenant: Counter[str] = Counter()
        self._fleet: tuple[int, Callable[[], int], Callable[[str], bool]] | None = None

    def set_limit(self, limit: int) -> None:
        """A new limit (the fleet share moved); jobs above it keep running, none starts."""
        self._book.limit = max(0, limit)

    def held_by(self, tenant: str) -> int:
        return self._by_tenant[tenant]

    def by_tenant(self) -> dict[str, int]:
        return dict(self._by_tenant)

    @property
    def in_flight(self) -> int:
        """Jobs holding a fal slot."""
        return self._book.in_flight

    @property
    def free_slots(self) -> int:
        """Jobs that may start now: below this replica's limit and, with a fleet cap, below
        the cap for the whole group as the shared ledger shows it (jobs at fal, whoever holds
        them) plus this replica's jobs being submitted (not in the ledger yet)."""
        free = self._book.free_slots
        if self._fleet is None or free <= 0:
            return free
        cap, at_fal, recorded = self._fleet
        submitting = sum(
            1
            for rid in self._contexts
            if (job := self._book.get(rid)) and job.state is JobState.RECEIVED and not recorded(rid)
        )
        return min(free, cap - at_fal() - submitting)

    def set_fleet(
        self, cap: int, at_fal: Callable[[], int], recorded: Callable[[str], bool]
    ) -> None:
        """The account's cap and how many jobs the whole group has (or may have) at fal: after
        a rebalance one replica may hold more than its share (it resumed them), and the others
        must not fill theirs meanwhile. ``recorded``: whether a job being submitted is in the
        ledger already (its intent), so counted in ``at_fal``."""
        self._fleet = (cap, at_fal, recorded)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._contexts

    def contexts(self) -> list[JobContext]:
        return list(self._contexts.values())

    def context(self, request_id: str) -> JobContext | None:
        return self._contexts.get(request_id)

    def job(self, request_id: str) -> Job:
        job = self._book.get(request_id)
        assert job is not None, f"job {request_id} is not held"
        return job

    def state_of(self, request_id: str | None) -> Job | None:
        return self._book.get(request_id) if request_id is not None else None

    def admit(self, context: JobContext, job: Job) -> None:
        """A new job: only when a slot is free (it is reserved before the submit)."""
        self._book.admit(job)
        self._hold(context)

    def adopt(self, context: JobContext, job: Job) -> None:
        """A job already at fal: held whatever the limit (it runs and is paid for anyway)."""
        self._book.adopt(job)
        self._hold(context)

    def _hold(self, context: JobContext) -> None:
        self._contexts[context.request_id] = context
        self._by_tenant[context.tenant] += 1

    def advance(self, request_id: str, event: JobEvent, now: datetime, **facts: object) -> Job:
        return self._book.advance(request_id, event, now, **facts)

    def release(self, request_id: str) -> tuple[Partition, int] | None:
        """Let go of a job; its record's place, if it was fetched (that offset waits on us)."""
        context = self._contexts.pop(request_id, None)
        if request_id in self._book:
            self._book.release(request_id)
        if context is None:
            return None
        self._by_tenant[context.tenant] -= 1
        if not self._by_tenant[context.tenant]:
            del self._by_tenant[context.tenant]
        return context.place
