"""The core's decisions as tables: one row per case, so a changed rule changes a visible row.

Covers intake (``decide_record``, ``plan_intake``), hand-back, cancels, outcomes and deadlines,
the backoff policy, and the ledger view's ``landed`` and ``ledger_time``. Pure: no Kafka, no
HTTP, no clock; every time is a fixed UTC datetime.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from service.core.backoff import Backoff
from service.core.cancels import CancelTarget, cancel_target
from service.core.handback import HandBack, hand_back
from service.core.intake import (
    IntakePlan,
    RecordAction,
    RecordFacts,
    RecordKind,
    decide_record,
    plan_intake,
)
from service.core.jobs import JobState
from service.core.ledger import (
    EntryState,
    FalRef,
    Intake,
    LedgerEntry,
    LedgerView,
    Source,
    ledger_time,
)
from service.core.outcomes import (
    Failure,
    Outcome,
    cancelled_at_fal,
    cancelled_before_submit,
    crashed,
    deadline_passed,
    failed,
    invalid,
    past_deadline_before_submit,
    run_seconds,
    succeeded,
    time_left,
    timed_out,
)

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HERE = Source("req", 0, 5)
ELSEWHERE = Source("req", 1, 9)
FAL = FalRef("f-1", "status", "response", "cancel")


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def entry(
    state: EntryState,
    *,
    fal: FalRef | None = None,
    source: Source = HERE,
    at: datetime = T0,
    key: str = "r1",
) -> LedgerEntry:
    return LedgerEntry(key=key, state=state, source=source, at=at, fal=fal)


# --- intake: decide_record --------------------------------------------------------------------

REQ = RecordKind.REQUEST

DECIDE_RECORD_ROWS = [
    # INVALID: only rejected_before counts; request facts are ignored.
    pytest.param(RecordFacts(RecordKind.INVALID), RecordAction.REJECT, id="invalid-new->REJECT"),
    pytest.param(
        RecordFacts(RecordKind.INVALID, rejected_before=True),
        RecordAction.SKIP_REJECTED,
        id="invalid-rejected-before->SKIP_REJECTED",
    ),
    pytest.param(
        RecordFacts(RecordKind.INVALID, intake=Intake.RESUME, held=True, cancelled=True, room=5),
        RecordAction.REJECT,
        id="invalid-ignores-request-facts->REJECT",
    ),
    # CANCEL: always CANCEL, whatever else is known.
    pytest.param(RecordFacts(RecordKind.CANCEL), RecordAction.CANCEL, id="cancel->CANCEL"),
    pytest.param(
        RecordFacts(
            RecordKind.CANCEL,
            rejected_before=True,
            intake=Intake.DUPLICATE,
            held=True,
            cancelled=True,
        ),
        RecordAction.CANCEL,
        id="cancel-ignores-other-facts->CANCEL",
    ),
    # Held here: ATTACH only for the resumed job's own record not yet attached.
    pytest.param(
        RecordFacts(REQ, intake=Intake.RESUME, held=True),
        RecordAction.ATTACH,
        id="held-resume-not-attached->ATTACH",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RESUME, held=True, cancelled=True, room=0),
        RecordAction.ATTACH,
        id="held-resume-not-attached-cancelled-no-room->ATTACH",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RESUME, held=True, attached=True),
        RecordAction.SKIP_DUPLICATE,
        id="held-resume-attached->SKIP_DUPLICATE",
    ),
    # ... and likewise for a job being reconciled (its submit's answer was lost) here.
    pytest.param(
        RecordFacts(REQ, intake=Intake.RECONCILE, held=True),
        RecordAction.ATTACH,
        id="held-reconcile-not-attached->ATTACH",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RECONCILE, held=True, cancelled=True, room=0),
        RecordAction.ATTACH,
        id="held-reconcile-not-attached-cancelled-no-room->ATTACH",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RECONCILE, held=True, attached=True),
        RecordAction.SKIP_DUPLICATE,
        id="held-reconcile-attached->SKIP_DUPLICATE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.NEW, held=True, room=3),
        RecordAction.SKIP_DUPLICATE,
        id="held-new->SKIP_DUPLICATE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.NEW, held=True, cancelled=True, room=3),
        RecordAction.SKIP_DUPLICATE,
        id="held-new-cancelled->SKIP_DUPLICATE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.DONE, held=True),
        RecordAction.SKIP_DUPLICATE,
        id="held-done->SKIP_DUPLICATE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.DUPLICATE, held=True),
        RecordAction.SKIP_DUPLICATE,
        id="held-duplicate->SKIP_DUPLICATE",
    ),
    # Not held: the ledger's word, then cancels (NEW only), then backlog room (NEW only).
    pytest.param(
        RecordFacts(REQ, intake=Intake.DUPLICATE, room=3),
        RecordAction.SKIP_DUPLICATE,
        id="duplicate->SKIP_DUPLICATE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.DUPLICATE, cancelled=True),
        RecordAction.SKIP_DUPLICATE,
        id="duplicate-cancelled->SKIP_DUPLICATE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.NEW, cancelled=True, room=3),
        RecordAction.SKIP_CANCELLED,
        id="new-cancelled->SKIP_CANCELLED",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.NEW, cancelled=True, room=0),
        RecordAction.SKIP_CANCELLED,
        id="new-cancelled-no-room->SKIP_CANCELLED",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.DONE, cancelled=True),
        RecordAction.SKIP_DONE,
        id="done-cancelled->SKIP_DONE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RESUME, cancelled=True),
        RecordAction.RESUME,
        id="resume-cancelled->RESUME",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.DONE, room=3),
        RecordAction.SKIP_DONE,
        id="done->SKIP_DONE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.DONE, room=0),
        RecordAction.SKIP_DONE,
        id="done-no-room->SKIP_DONE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RESUME, room=3),
        RecordAction.RESUME,
        id="resume->RESUME",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RESUME, room=0),
        RecordAction.RESUME,
        id="resume-no-room->RESUME",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RESUME, attached=True),
        RecordAction.RESUME,
        id="resume-attached-but-not-held->RESUME",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RECONCILE, room=3),
        RecordAction.RECONCILE,
        id="reconcile->RECONCILE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RECONCILE, room=0),
        RecordAction.RECONCILE,
        id="reconcile-no-room->RECONCILE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RECONCILE, cancelled=True),
        RecordAction.RECONCILE,
        id="reconcile-cancelled->RECONCILE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.RECONCILE, attached=True),
        RecordAction.RECONCILE,
        id="reconcile-attached-but-not-held->RECONCILE",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.NEW, room=0),
        RecordAction.NO_ROOM,
        id="new-no-room->NO_ROOM",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.NEW, room=-2),
        RecordAction.NO_ROOM,
        id="new-negative-room->NO_ROOM",
    ),
    pytest.param(
        RecordFacts(REQ, intake=Intake.NEW, room=1),
        RecordAction.QUEUE,
        id="new-room-for-one->QUEUE",
    ),
]


@pytest.mark.parametrize(("facts", "action"), DECIDE_RECORD_ROWS)
def test_decide_record(facts: RecordFacts, action: RecordAction) -> None:
    """Each fetched record gets one action; the rules apply in order: invalid, cancel, held
    (ATTACH for a resumed or reconciled job's own unattached record, else SKIP_DUPLICATE),
    ledger duplicate, a prior cancel (NEW only), a finished redelivery, a job at fal, a submit
    whose outcome is unknown, and backlog room (NEW only)."""
    assert decide_record(facts) is action


def test_decide_record_table_reaches_every_action() -> None:
    """No RecordAction is dead: the table above reaches each one."""
    reached = {row.values[1] for row in DECIDE_RECORD_ROWS}
    assert reached == set(RecordAction)


# --- intake: plan_intake ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("room", "unfinished", "max_unfinished", "plan"),
    [
        pytest.param(5, 0, 16, IntakePlan(5, False), id="room-bound"),
        pytest.param(5, 14, 16, IntakePlan(2, False), id="unfinished-bound"),
        pytest.param(1, 15, 16, IntakePlan(1, False), id="one-left-on-both"),
        pytest.param(0, 3, 16, IntakePlan(0, True), id="no-room->pause"),
        pytest.param(-2, 0, 16, IntakePlan(0, True), id="over-limit-after-adopt->pause"),
        pytest.param(8, 16, 16, IntakePlan(0, True), id="unfinished-at-max->pause"),
        pytest.param(8, 20, 16, IntakePlan(0, True), id="unfinished-past-max->pause"),
    ],
)
def test_plan_intake(room: int, unfinished: int, max_unfinished: int, plan: IntakePlan) -> None:
    """Intake fetches what fits under both bounds, and pauses (fetching nothing) at either."""
    assert plan_intake(room, unfinished, max_unfinished) == plan


# --- hand-back --------------------------------------------------------------------------------

HAND_BACK_ROWS: dict[JobState | None, HandBack] = {
    JobState.RECEIVED: HandBack.WAIT_FOR_SUBMIT,
    JobState.RECONCILING: HandBack.LET_GO,
    JobState.SUBMITTED: HandBack.LET_GO,
    JobState.QUEUED: HandBack.LET_GO,
    JobState.RUNNING: HandBack.LET_GO,
    JobState.COMPLETED: HandBack.LET_GO,
    JobState.SUCCEEDED: HandBack.WAIT_FOR_WRITE,
    JobState.FAILED: HandBack.WAIT_FOR_WRITE,
    JobState.CANCELLED: HandBack.WAIT_FOR_WRITE,
    None: HandBack.WAIT_FOR_WRITE,
}


@pytest.mark.parametrize(
    ("state", "action"),
    [
        pytest.param(state, action, id=f"{state.value if state else 'no-job'}->{action.name}")
        for state, action in HAND_BACK_ROWS.items()
    ],
)
def test_hand_back(state: JobState | None, action: HandBack) -> None:
    """A submit in progress is waited for, a job recorded at fal or being reconciled (its
    intent is in the ledger) is let go, and a terminal job (its result being written) or work
    that is no job gets the grace to land."""
    assert hand_back(state) is action


def test_hand_back_table_covers_every_job_state() -> None:
    """The hand-back table has a row for every JobState, so a new state cannot slip by."""
    assert set(HAND_BACK_ROWS) == {*JobState, None}


# --- cancels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "ledger", "target"),
    [
        pytest.param(False, None, CancelTarget.NOT_SEEN, id="not-held-no-entry->NOT_SEEN"),
        pytest.param(
            False,
            entry("submitted", fal=FAL),
            CancelTarget.AT_FAL,
            id="not-held-submitted-with-fal->AT_FAL",
        ),
        pytest.param(
            False,
            entry("submitted", fal=FAL, source=ELSEWHERE),
            CancelTarget.AT_FAL,
            id="not-held-other-replicas-job-at-fal->AT_FAL",
        ),
        pytest.param(
            False,
            entry("submitted"),
            CancelTarget.TOO_LATE,
            id="not-held-submitted-without-fal->TOO_LATE",
        ),
        pytest.param(False, entry("finished"), CancelTarget.TOO_LATE, id="not-held-finished"),
        pytest.param(
            False,
            entry("finished", fal=FAL),
            CancelTarget.TOO_LATE,
            id="not-held-finished-with-fal->TOO_LATE",
        ),
        pytest.param(False, entry("rejected"), CancelTarget.TOO_LATE, id="not-held-rejected"),
        pytest.param(True, None, CancelTarget.SUBMITTING, id="held-no-entry->SUBMITTING"),
        pytest.param(
            True,
            entry("submitted", fal=FAL),
            CancelTarget.AT_FAL,
            id="held-submitted-with-fal->AT_FAL",
        ),
        pytest.param(
            True,
            entry("submitted"),
            CancelTarget.SUBMITTING,
            id="held-submitted-without-fal->SUBMITTING",
        ),
        pytest.param(
            True, entry("finished"), CancelTarget.SUBMITTING, id="held-finished->SUBMITTING"
        ),
        pytest.param(
            True, entry("rejected"), CancelTarget.SUBMITTING, id="held-rejected->SUBMITTING"
        ),
    ],
)
def test_cancel_target(held: bool, ledger: LedgerEntry | None, target: CancelTarget) -> None:
    """A ledger entry naming a fal job wins (cancel it at fal); otherwise a job held here is
    still being submitted; otherwise nothing known means NOT_SEEN and any other entry TOO_LATE."""
    assert cancel_target(held, ledger) is target


# --- outcomes: deadlines and time left --------------------------------------------------------


@pytest.mark.parametrize(
    ("deadline", "passed"),
    [
        pytest.param(None, False, id="no-deadline"),
        pytest.param(T0 - s(1), True, id="earlier"),
        pytest.param(T0, True, id="exactly-now"),
        pytest.param(T0 + s(1), False, id="later"),
    ],
)
def test_deadline_passed(deadline: datetime | None, passed: bool) -> None:
    """A deadline has passed from its very instant on; no deadline never passes."""
    assert deadline_passed(T0, deadline) is passed


@pytest.mark.parametrize(
    ("submitted_at", "deadline", "left"),
    [
        pytest.param(None, None, 600.0, id="not-submitted->whole-timeout"),
        pytest.param(T0, None, 600.0, id="submitted-just-now->whole-timeout"),
        pytest.param(T0 - s(200), None, 400.0, id="submitted-200s-ago->rest"),
        pytest.param(T0 - s(600), None, 0.0, id="submitted-exactly-timeout-ago->0"),
        pytest.param(T0 - s(1000), None, 0.0, id="submitted-long-ago->0-not-negative"),
        pytest.param(None, T0 + s(100), 100.0, id="not-submitted-deadline-sooner"),
        pytest.param(None, T0 + s(900), 600.0, id="not-submitted-deadline-later"),
        pytest.param(T0 - s(200), T0 + s(50), 50.0, id="submitted-deadline-sooner-wins"),
        pytest.param(T0 - s(200), T0 + s(1000), 400.0, id="submitted-deadline-later-ignored"),
        pytest.param(None, T0 - s(30), 0.0, id="deadline-passed->0-not-negative"),
        pytest.param(T0 - s(1000), T0 - s(30), 0.0, id="both-spent->0"),
    ],
)
def test_time_left(submitted_at: datetime | None, deadline: datetime | None, left: float) -> None:
    """The job timeout (600 s here) counts from the submit, a sooner deadline wins, and the
    time left is never negative."""
    assert time_left(T0, submitted_at, 600.0, deadline) == left


DEADLINE_TIMEOUT = Outcome(
    "failed",
    Failure("timeout", "the request's deadline passed; the job was cancelled at fal", False),
)


@pytest.mark.parametrize(
    ("deadline", "job_timeout", "outcome"),
    [
        pytest.param(T0 - s(5), 600.0, DEADLINE_TIMEOUT, id="deadline-passed->not-retryable"),
        pytest.param(T0, 600.0, DEADLINE_TIMEOUT, id="deadline-exactly-now->not-retryable"),
        pytest.param(
            T0 + s(5),
            600.0,
            Outcome(
                "failed", Failure("timeout", "no result within RELAY_JOB_TIMEOUT_S=600s", True)
            ),
            id="deadline-ahead->job-timeout-retryable",
        ),
        pytest.param(
            None,
            600.0,
            Outcome(
                "failed", Failure("timeout", "no result within RELAY_JOB_TIMEOUT_S=600s", True)
            ),
            id="no-deadline->job-timeout-retryable",
        ),
        pytest.param(
            None,
            1.5,
            Outcome(
                "failed", Failure("timeout", "no result within RELAY_JOB_TIMEOUT_S=1.5s", True)
            ),
            id="fractional-timeout-in-message",
        ),
    ],
)
def test_timed_out(deadline: datetime | None, job_timeout: float, outcome: Outcome) -> None:
    """A job out of time failed with ``timeout``: not retryable when the request's own
    deadline passed, retryable (naming RELAY_JOB_TIMEOUT_S) when our job timeout ran out."""
    assert timed_out(T0, deadline, job_timeout) == outcome


def test_past_deadline_before_submit() -> None:
    """A request whose deadline passed before its submit fails with ``timeout``, not
    retryable, and names the deadline in its details."""
    assert past_deadline_before_submit(T0) == Outcome(
        "failed",
        Failure(
            "timeout",
            "the request's deadline passed before it was submitted",
            False,
            {"deadline": "2026-11-24T12:00:00+00:00"},
        ),
    )


# --- outcomes: cancels, codes, run time -------------------------------------------------------

DEFAULT_CANCEL = "the job was cancelled at fal"


@pytest.mark.parametrize(
    ("error", "error_type", "outcome"),
    [
        pytest.param(
            "stopped by the client",
            "client_cancelled",
            Outcome(
                "cancelled",
                Failure(
                    "cancelled",
                    "stopped by the client",
                    False,
                    {"error_type": "client_cancelled"},
                ),
            ),
            id="client-cancelled-with-message",
        ),
        pytest.param(
            None,
            "client_cancelled",
            Outcome(
                "cancelled",
                Failure("cancelled", DEFAULT_CANCEL, False, {"error_type": "client_cancelled"}),
            ),
            id="client-cancelled-no-message->default",
        ),
        pytest.param(
            "",
            "client_cancelled",
            Outcome(
                "cancelled",
                Failure("cancelled", DEFAULT_CANCEL, False, {"error_type": "client_cancelled"}),
            ),
            id="client-cancelled-empty-message->default",
        ),
        pytest.param("runner died", "runner_failed", None, id="other-error-type->None"),
        pytest.param("timed out", "request_timeout", None, id="request-timeout->None"),
        pytest.param("cancelled", None, None, id="no-error-type->None"),
        pytest.param(None, None, None, id="nothing->None"),
        pytest.param("x", "CLIENT_CANCELLED", None, id="case-sensitive->None"),
    ],
)
def test_cancelled_at_fal(
    error: str | None, error_type: str | None, outcome: Outcome | None
) -> None:
    """Only fal's ``client_cancelled`` makes a job's end a cancel (with fal's message, or a
    default one); any other error type, or none, is not a cancel."""
    assert cancelled_at_fal(error, error_type) == outcome


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        pytest.param(succeeded({"url": "https://v"}, 7), "none", id="succeeded->none"),
        pytest.param(failed("fal_error", "boom", retryable=True), "fal_error", id="failed"),
        pytest.param(crashed("KeyError"), "internal_error", id="crashed"),
        pytest.param(invalid("bad json"), "invalid_request", id="invalid"),
        pytest.param(cancelled_before_submit(), "cancelled", id="cancelled-before-submit"),
        pytest.param(timed_out(T0, None, 600.0), "timeout", id="timed-out"),
    ],
)
def test_outcome_error_code(outcome: Outcome, code: str) -> None:
    """The metric label is the error's code, or ``none`` for a success."""
    assert outcome.error_code == code


@pytest.mark.parametrize(
    ("started_at", "completed_at", "seconds"),
    [
        pytest.param(None, None, None, id="neither"),
        pytest.param(T0, None, None, id="not-completed"),
        pytest.param(None, T0, None, id="never-started"),
        pytest.param(T0, T0 + s(12), 12.0, id="whole-seconds"),
        pytest.param(
            T0, T0 + timedelta(seconds=1, microseconds=234_567), 1.235, id="rounded-to-ms"
        ),
    ],
)
def test_run_seconds(
    started_at: datetime | None, completed_at: datetime | None, seconds: float | None
) -> None:
    """Run time needs both ends, and is kept to the millisecond."""
    assert run_seconds(started_at, completed_at) == seconds


# --- backoff ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        pytest.param(Backoff(1.0, 10.0), [1.0, 2.0, 4.0, 8.0, 10.0, 10.0], id="doubles-to-cap"),
        pytest.param(
            Backoff(0.5, 5.0, factor=3.0), [0.5, 1.5, 4.5, 5.0, 5.0], id="factor-3-to-cap"
        ),
        pytest.param(Backoff(2.0, 10.0, factor=1.0), [2.0, 2.0, 2.0], id="factor-1-constant"),
        pytest.param(Backoff(3.0, 3.0), [3.0, 3.0, 3.0], id="initial-equals-cap"),
    ],
)
def test_backoff_sequence(backoff: Backoff, delays: list[float]) -> None:
    """Delays start at ``initial`` and grow by ``factor`` up to ``cap``, then stay there."""
    assert [backoff.next() for _ in delays] == delays


def test_backoff_reset_starts_again_from_initial() -> None:
    """After a success (reset) the next failure waits ``initial`` again, and grows anew."""
    backoff = Backoff(1.0, 10.0)
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert [backoff.next(), backoff.next(), backoff.next()] == [1.0, 2.0, 4.0]


def test_backoff_peek_shows_the_next_delay_without_taking_it() -> None:
    """``peek`` is what ``next`` will give; asking it twice changes nothing."""
    backoff = Backoff(1.0, 10.0)
    assert backoff.peek() == 1.0
    assert backoff.peek() == 1.0
    assert backoff.next() == 1.0
    assert backoff.peek() == 2.0
    assert backoff.next() == 2.0
    backoff.reset()
    assert backoff.peek() == 1.0


@pytest.mark.parametrize(
    ("initial", "cap", "factor", "message"),
    [
        pytest.param(0.0, 10.0, 2.0, "need 0 < initial <= cap", id="zero-initial"),
        pytest.param(-1.0, 10.0, 2.0, "need 0 < initial <= cap", id="negative-initial"),
        pytest.param(11.0, 10.0, 2.0, "need 0 < initial <= cap", id="initial-above-cap"),
        pytest.param(1.0, 10.0, 0.5, "factor must be at least 1", id="shrinking-factor"),
        pytest.param(1.0, 10.0, 0.0, "factor must be at least 1", id="zero-factor"),
    ],
)
def test_backoff_refuses_nonsense(initial: float, cap: float, factor: float, message: str) -> None:
    """A backoff that would not wait, or would shrink, is refused when it is made."""
    with pytest.raises(ValueError, match=re.escape(message)):
        Backoff(initial, cap, factor=factor)


# --- ledger: landed and ledger_time -----------------------------------------------------------

SUBMITTED = entry("submitted", fal=FAL)
FINISHED = entry("finished", at=T0 + s(30))


def view_of(*entries: LedgerEntry) -> LedgerView:
    v = LedgerView(timedelta(days=7))
    for e in entries:
        v.apply(e.key, e)
    return v


@pytest.mark.parametrize(
    ("held", "asked", "landed"),
    [
        pytest.param([SUBMITTED], SUBMITTED, True, id="same-entry"),
        pytest.param([SUBMITTED], replace(SUBMITTED), True, id="equal-copy-as-read-back"),
        pytest.param([SUBMITTED], FINISHED, False, id="other-entry-same-key"),
        pytest.param([SUBMITTED, FINISHED], SUBMITTED, False, id="superseded-by-later-entry"),
        pytest.param([SUBMITTED, FINISHED], FINISHED, True, id="the-superseding-entry"),
        pytest.param(
            [SUBMITTED], replace(SUBMITTED, source=ELSEWHERE), False, id="other-source-same-key"
        ),
        pytest.param([], SUBMITTED, False, id="missing"),
        pytest.param([entry("finished", key="r2")], FINISHED, False, id="only-other-keys"),
        pytest.param(
            [replace(SUBMITTED, at=ledger_time(T0 + timedelta(microseconds=123_456)))],
            replace(SUBMITTED, at=T0 + timedelta(microseconds=123_456)),
            False,
            id="sub-ms-time-not-truncated->not-landed",
        ),
        pytest.param(
            [replace(SUBMITTED, at=ledger_time(T0 + timedelta(microseconds=123_456)))],
            replace(SUBMITTED, at=ledger_time(T0 + timedelta(microseconds=123_456))),
            True,
            id="ledger-time-truncated->landed",
        ),
    ],
)
def test_ledger_view_landed(held: list[LedgerEntry], asked: LedgerEntry, landed: bool) -> None:
    """A write landed when the view holds exactly that entry for its key; anything else
    there (another entry, a later one, nothing) means it did not."""
    assert view_of(*held).landed(asked) is landed


@pytest.mark.parametrize(
    ("at", "kept"),
    [
        pytest.param(
            T0.replace(microsecond=123_456), T0.replace(microsecond=123_000), id="truncates"
        ),
        pytest.param(
            T0.replace(microsecond=999_999),
            T0.replace(microsecond=999_000),
            id="never-rounds-up-into-next-second",
        ),
        pytest.param(T0.replace(microsecond=999), T0, id="sub-ms-only->whole-second"),
        pytest.param(
            T0.replace(microsecond=250_000), T0.replace(microsecond=250_000), id="already-ms"
        ),
        pytest.param(T0, T0, id="whole-second"),
    ],
)
def test_ledger_time(at: datetime, kept: datetime) -> None:
    """Ledger times are truncated to the millisecond, keeping the date, time and zone."""
    result = ledger_time(at)
    assert result == kept
    assert result.tzinfo is UTC
