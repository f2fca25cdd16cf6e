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


# --- a submit whose answer was lost -----------------------------------------------------------

S, E = JobState, JobEvent


@pytest.mark.parametrize(
    ("state", "event", "after"),
    [
        pytest.param(S.RECEIVED, E.UNKNOWN, S.RECONCILING, id="answer-lost->reconciling"),
        pytest.param(S.RECONCILING, E.SUBMITTED, S.SUBMITTED, id="found-in-history->submitted"),
        pytest.param(S.RECONCILING, E.RESUBMIT, S.RECEIVED, id="surely-absent->received"),
        pytest.param(S.RECONCILING, E.FAILED, S.FAILED, id="reconciling-fails"),
        pytest.param(S.RECONCILING, E.CANCELLED, S.CANCELLED, id="reconciling-cancelled"),
        pytest.param(S.SUBMITTED, E.UNKNOWN, None, id="submitted-cannot-be-unknown"),
        pytest.param(S.QUEUED, E.UNKNOWN, None, id="queued-cannot-be-unknown"),
        pytest.param(S.COMPLETED, E.UNKNOWN, None, id="completed-cannot-be-unknown"),
        pytest.param(S.RECONCILING, E.UNKNOWN, None, id="unknown-twice"),
        pytest.param(S.FAILED, E.UNKNOWN, None, id="terminal-cannot-be-unknown"),
        pytest.param(S.RECEIVED, E.RESUBMIT, None, id="resubmit-needs-reconciling"),
        pytest.param(S.SUBMITTED, E.RESUBMIT, None, id="a-job-at-fal-is-never-resubmitted"),
        pytest.param(S.CANCELLED, E.RESUBMIT, None, id="terminal-cannot-resubmit"),
        pytest.param(S.RECONCILING, E.QUEUED, None, id="reconciling-not-queued-before-found"),
        pytest.param(S.RECONCILING, E.STARTED, None, id="reconciling-not-started"),
        pytest.param(S.RECONCILING, E.COMPLETED, None, id="reconciling-not-completed"),
        pytest.param(S.RECONCILING, E.SUCCEEDED, None, id="reconciling-not-succeeded"),
    ],
)
def test_reconciling_transitions(state: JobState, event: JobEvent, after: JobState | None) -> None:
    """A lost answer makes a just-received job RECONCILING; from there it is found
    (SUBMITTED), sent again (RECEIVED), failed or cancelled, and nothing else. None: refused."""
    job = Job("r", received_at=at(0), state=state)
    if after is None:
        with pytest.raises(IllegalTransition, match=f"{event.value} is not allowed in"):
            advance(job, event, at(1))
    else:
        assert advance(job, event, at(1)).state is after


def test_a_job_found_in_fals_history_is_stamped_when_found() -> None:
    """Adopted from the history, the job gets its fal request id and its submit time then."""
    job = advance(Job("r", received_at=at(0)), JobEvent.UNKNOWN, at(1))
    assert (job.fal_request_id, job.submitted_at) == (None, None)
    found = advance(job, JobEvent.SUBMITTED, at(40), fal_request_id="fal-9")
    assert (found.state, found.fal_request_id, found.submitted_at) == (
        JobState.SUBMITTED,
        "fal-9",
        at(40),
    )


def test_a_job_sent_again_walks_the_normal_path() -> None:
    """Not in the history past the bound: RECEIVED again, then submitted as usual."""
    job = advance(Job("r", received_at=at(0)), JobEvent.UNKNOWN, at(1))
    job = advance(job, JobEvent.RESUBMIT, at(600))
    assert (job.state, job.received_at, job.submitted_at) == (JobState.RECEIVED, at(0), None)
    job = advance(job, JobEvent.SUBMITTED, at(601), fal_request_id="fal-2")
    assert (job.state, job.fal_request_id, job.submitted_at) == (
        JobState.SUBMITTED,
        "fal-2",
        at(601),
    )


def test_a_reconciling_job_holds_its_slot_until_it_ends() -> None:
    """fal may have the job, so it keeps its slot while reconciling and when sent again;
    failing gives the slot back."""
    book = JobBook(limit=1)
    book.admit(Job("a", received_at=at(0)))
    assert book.advance("a", JobEvent.UNKNOWN, at(1)).holds_slot
    assert (book.in_flight, book.free_slots) == (1, 0)
    book.advance("a", JobEvent.RESUBMIT, at(2))
    assert (book.in_flight, book.free_slots) == (1, 0)
    book.advance("a", JobEvent.UNKNOWN, at(3))
    done = book.advance("a", JobEvent.FAILED, at(4))
    assert (done.state, done.completed_at) == (JobState.FAILED, at(4))
    assert (book.in_flight, book.free_slots) == (0, 1)
