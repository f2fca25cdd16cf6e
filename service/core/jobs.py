"""The lifecycle of one video job, as a transition table and one ``advance()`` function.

Theory of operation: a valid request enters as RECEIVED and holds one of the replica's fal slots
from that moment (the slot is reserved *before* the submit, so concurrent submits can never
overshoot the limit). fal's words move it through SUBMITTED, QUEUED and RUNNING to COMPLETED
(fal is done, the result is not fetched yet). Fetching the result makes it SUCCEEDED or FAILED;
CANCELLED and FAILED can also happen from any live state. A terminal job gives its slot back;
its result event is then published by the shell, after which the job leaves the book.

A submit whose answer was lost (UNKNOWN) makes the job RECONCILING: fal may have it, so it
keeps its slot while fal's request history is asked. Found there, it is SUBMITTED; surely not
there, it is RECEIVED again and submitted once more (RESUBMIT).

fal may send a running job back to its queue (it retries runner failures internally), so
RUNNING -> QUEUED is allowed; statuses may repeat.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta


class JobState(enum.Enum):
    RECEIVED = "received"
    RECONCILING = "reconciling"
    SUBMITTED = "submitted"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


class JobEvent(enum.Enum):
    UNKNOWN = "unknown"  # the submit's answer was lost
    RESUBMIT = "resubmit"  # fal's history shows no such job: submit again
    SUBMITTED = "submitted"
    QUEUED = "queued"
    STARTED = "started"
    COMPLETED = "completed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
_LIVE = (
    JobState.RECEIVED,
    JobState.RECONCILING,
    JobState.SUBMITTED,
    JobState.QUEUED,
    JobState.RUNNING,
)
_AT_FAL = (JobState.SUBMITTED, JobState.QUEUED, JobState.RUNNING)

S, E = JobState, JobEvent
TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (S.RECEIVED, E.SUBMITTED): S.SUBMITTED,
    (S.RECEIVED, E.UNKNOWN): S.RECONCILING,
    (S.RECONCILING, E.SUBMITTED): S.SUBMITTED,
    (S.RECONCILING, E.RESUBMIT): S.RECEIVED,
    **{(state, E.QUEUED): S.QUEUED for state in _AT_FAL},
    **{(state, E.STARTED): S.RUNNING for state in _AT_FAL},
    **{(state, E.COMPLETED): S.COMPLETED for state in _AT_FAL},
    (S.COMPLETED, E.SUCCEEDED): S.SUCCEEDED,
    **{(state, E.FAILED): S.FAILED for state in (*_LIVE, S.COMPLETED)},
    **{(state, E.CANCELLED): S.CANCELLED for state in (*_LIVE, S.COMPLETED)},
}
del S, E


class IllegalTransition(Exception):
    """An event that the job's current state does not allow: a bug in the shell, never input."""

    def __init__(self, job: Job, event: JobEvent) -> None:
        super().__init__(f"job {job.request_id}: {event.value} is not allowed in {job.state.value}")
        self.job = job
        self.event = event


@dataclass(frozen=True, slots=True)
class Job:
    """What the relay knows about one request's fal job. Immutable; ``advance`` makes the next."""

    request_id: str
    received_at: datetime
    state: JobState = JobState.RECEIVED
    fal_request_id: str | None = None
    queue_position: int | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def holds_slot(self) -> bool:
        """Submitted (or about to be) and not finished: counts against the in-flight limit."""
        return not self.state.terminal


def advance(
    job: Job,
    event: JobEvent,
    now: datetime,
    *,
    fal_request_id: str | None = None,
    queue_position: int | None = None,
    inference_time: float | None = None,
) -> Job:
    """The job after ``event`` at ``now``; raises ``IllegalTransition`` if the table forbids it.

    ``inference_time`` (fal's own run time, reported on completion) dates the start of a job
    that went from the queue to completion between two status calls, so queue wait and run
    time stay meaningful however coarse the polling was.
    """
    try:
        state = TRANSITIONS[(job.state, event)]
    except KeyError:
        raise IllegalTransition(job, event) from None
    changes: dict[str, object] = {"state": state}
    if event is JobEvent.SUBMITTED:
        changes.update(fal_request_id=fal_request_id, submitted_at=now)
    if event is JobEvent.QUEUED:
        changes["queue_position"] = queue_position
    if event is JobEvent.STARTED and job.started_at is None:
        changes["started_at"] = now
    if (event is JobEvent.COMPLETED or state.terminal) and job.completed_at is None:
        changes["completed_at"] = now
        if event is JobEvent.COMPLETED and job.started_at is None and inference_time is not None:
            start = now - timedelta(seconds=max(0.0, inference_time))
            changes["started_at"] = max(start, job.submitted_at) if job.submitted_at else start
    return replace(job, **changes)  # type: ignore[arg-type]


class JobBook:
    """The jobs this replica holds, by request_id.

    In-flight accounting is derived from the jobs' states, so a slot is released in exactly
    one place: the transition to a terminal state.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._jobs: dict[str, Job] = {}
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def free_slots(self) -> int:
        return self.limit - self._in_flight

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._jobs

    def get(self, request_id: str) -> Job | None:
        return self._jobs.get(request_id)

    def admit(self, job: Job) -> None:
        """Take a RECEIVED job and reserve its slot; only when a slot is free."""
        if self.free_slots <= 0:
            raise ValueError("no free slot: the shell must not admit past the limit")
        self._add(job)

    def adopt(self, job: Job) -> None:
        """Take a job that is already at fal (resumed from the ledger), limit or not: it is
        running and paid for whether we watch it or not."""
        self._add(job)

    def _add(self, job: Job) -> None:
        if job.request_id in self._jobs:
            raise ValueError(f"job {job.request_id} is already held")
        self._jobs[job.request_id] = job
        if job.holds_slot:
            self._in_flight += 1

    def advance(self, request_id: str, event: JobEvent, now: datetime, **facts: object) -> Job:
        job = self._jobs[request_id]
        nxt = advance(job, event, now, **facts)  # type: ignore[arg-type]
        if job.holds_slot and not nxt.holds_slot:
            self._in_flight -= 1
        self._jobs[request_id] = nxt
        return nxt

    def release(self, request_id: str) -> None:
        """Forget a job: its result is published, or it was handed back."""
        job = self._jobs.pop(request_id)
        if job.holds_slot:
            self._in_flight -= 1
