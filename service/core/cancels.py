"""Where a cancel message's request is, and so what cancelling it means.

- SUBMITTING: held here and not yet at fal. Its own task cancels it at fal as soon as fal
  has it, and publishes the one ``cancelled`` event.
- AT_FAL: the ledger names its fal job (ours or another replica's). It is cancelled at fal;
  its watcher then sees it end as cancelled and publishes the one event.
- NOT_SEEN: nothing is known of it. A ``cancelled`` event now, whose ``finished`` ledger
  entry makes the request a duplicate if it comes later: it is never submitted.
- TOO_LATE: it finished already and has its one event: nothing to do.
"""

from __future__ import annotations

import enum

from service.core.ledger import LedgerEntry


class CancelTarget(enum.Enum):
    SUBMITTING = "submitting"
    AT_FAL = "at_fal"
    NOT_SEEN = "not_seen"
    TOO_LATE = "too_late"


def cancel_target(held: bool, entry: LedgerEntry | None) -> CancelTarget:
    """``held``: a job of this request_id is held here; ``entry``: the ledger's entry for it."""
    at_fal = entry is not None and entry.state == "submitted" and entry.fal is not None
    if at_fal:
        return CancelTarget.AT_FAL
    if held:
        return CancelTarget.SUBMITTING
    if entry is None:
        return CancelTarget.NOT_SEEN
    return CancelTarget.TOO_LATE
