"""The job lifecycle table and the book that derives in-flight accounting from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.core.jobs import (
    TRANSITIONS,
    IllegalTransition,
    Job,
    JobBook,
    JobEvent,
    JobState,
    advance,
)

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_happy_path_stamps_each_step() -> None:
    """A job walks received -> submitted -> queued -> running -> completed -> succeeded."""
    job = Job("r1", received_at=at(0))
    job = advance(job, JobEvent.SUBMITTED, at(1), fal_request_id="fal-1")
    job = advance(job, JobEvent.QUEUED, at(2), queue_position=4)
    job = advance(job, JobEvent.STARTED, at(3))
    job = advance(job, JobEvent.STARTED, at(4))  # repeated statuses keep the first start
    job = advance(job, JobEvent.COMPLETED, at(9))
    job = advance(job, JobEvent.SUCCEEDED, at(10))
    assert job.state is JobState.SUCCEEDED
    assert (job.fal_request_id, job.queue_position) == ("fal-1", 4)
    assert (job.submitted_at, job.started_at, job.completed_at) == (at(1), at(3), at(9))


def test_completion_without_seen_start_is_dated_by_fals_inference_time() -> None:
    """A job that went from the queue to done between two polls gets its start from fal's
    inference_time, never before its submit."""
    job = advance(Job("r", received_at=at(0)), JobEvent.SUBMITTED, at(1), fal_request_id="f")
    done = advance(job, JobEvent.COMPLETED, at(20), inference_time=5.0)
    assert done.started_at == at(15)
    early = advance(job, JobEvent.COMPLETED, at(3), inference_time=60.0)
    assert early.started_at == at(1)


@pytest.mark.parametrize("state", list(JobState))
@pytest.mark.parametrize("event", list(JobEvent))
def test_every_pair_is_in_the_table_or_refused(state: JobState, event: JobEvent) -> None:
    """advance() follows the table exactly and refuses everything else by name."""
    job = Job("r", received_at=at(0), state=state)
    if (state, event) in TRANSITIONS:
        assert advance(job, event, at(1)).state is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransition, match=event.value):
            advance(job, event, at(1))


def test_terminal_states_accept_nothing() -> None:
    for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        assert not any(s is state for s, _e in TRANSITIONS)


def test_book_counts_slots_until_terminal() -> None:
    book = JobBook(limit=2)
    book.admit(Job("a", received_at=at(0)))
    book.admit(Job("b", received_at=at(0)))
    assert (book.in_flight, book.free_slots) == (2, 0)
    with pytest.raises(ValueError, match="no free slot"):
        book.admit(Job("c", received_at=at(0)))
    book.advance("a", JobEvent.FAILED, at(1))
    assert book.in_flight == 1  # released on the terminal transition ...
    assert "a" in book  # ... but held until its event is published
    book.release("a")
    book.release("b")
    assert (book.in_flight, len(book)) == (0, 0)


def test_adopted_jobs_count_even_past_the_limit() -> None:
    """A job resumed from the ledger is at fal already: it counts, and blocks new ones."""
    book = JobBook(limit=1)
    book.admit(Job("mine", received_at=at(0)))
    book.adopt(Job("inherited", received_at=at(0), state=JobState.SUBMITTED))
    assert (book.in_flight, book.free_slots) == (2, -1)
    with pytest.raises(ValueError, match="already held"):
        book.adopt(Job("mine", received_at=at(0), state=JobState.SUBMITTED))
