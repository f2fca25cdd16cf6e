"""What a hand-back (shutdown, or partitions revoked) does with each piece of work.

- A job still being submitted (RECEIVED) finishes its submit and its ledger write, then
  stops by itself: cancelling it could leave a job at fal that no ledger entry names.
- A job recorded at fal (SUBMITTED .. COMPLETED) is let go at once: its next owner resumes it
  from the ledger; it is never cancelled at fal. So is a job being reconciled (its submit's
  answer was lost): its intent is in the ledger, and its next owner asks fal's history.
- Anything else (a result, a dead letter or a cancelled event being written) gets the grace
  period to land.

The shell (``service.relay.ownership``) gives writes the grace period and a submit twice
that in all, since fal's answer and the ledger write both have to come back.
"""

from __future__ import annotations

import enum

from service.core.jobs import JobState


class HandBack(enum.Enum):
    LET_GO = "let_go"
    WAIT_FOR_SUBMIT = "wait_for_submit"
    WAIT_FOR_WRITE = "wait_for_write"


def hand_back(state: JobState | None) -> HandBack:
    """``state``: the job's state, or None for work that is no job (a reject, a cancel)."""
    if state is JobState.RECEIVED:
        return HandBack.WAIT_FOR_SUBMIT
    if state is not None and not state.terminal:
        return HandBack.LET_GO
    return HandBack.WAIT_FOR_WRITE
