"""What intake does with a fetched record, and how much it may fetch.

Two bounds on fetching: room in the backlog of waiting requests (``service.core.scheduler``),
and records held but not yet finished (a finished job whose result is still being published
holds memory and an uncommitted offset, so intake also stops when too many of those pile up,
e.g. while the results topic cannot be written). At either bound the shell pauses its
partitions and keeps polling, so the consumer stays in its group.

Each fetched record then gets one ``RecordAction`` from ``decide_record``, given what the
decoder made of it, what the ledger says of its request_id (``Intake``), and what this
replica holds. The shell carries the action out (``service.relay.intake``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from service.core.ledger import Intake


@dataclass(frozen=True, slots=True)
class IntakePlan:
    fetch: int
    pause: bool


def plan_intake(room: int, unfinished: int, max_unfinished: int) -> IntakePlan:
    """``room``: requests the backlog still takes; ``unfinished``: records taken and not yet
    finished (waiting, at fal, or being published)."""
    room = min(room, max_unfinished - unfinished)
    if room <= 0:
        return IntakePlan(fetch=0, pause=True)
    return IntakePlan(fetch=room, pause=False)


class RecordKind(enum.Enum):
    INVALID = "invalid"  # the decoder refused it
    CANCEL = "cancel"  # a cancel message
    REQUEST = "request"  # a valid video request


class RecordAction(enum.Enum):
    REJECT = "reject"  # dead-letter it (and a failed event when its id is free)
    SKIP_REJECTED = "skip_rejected"  # dead-lettered before its offset was committed
    CANCEL = "cancel"  # cancel the request it names, wherever it is
    QUEUE = "queue"  # a new request: into the backlog, to wait for its turn at fal
    NO_ROOM = "no_room"  # a new request but the backlog is full: rewind, take it later
    ATTACH = "attach"  # the record of a job resumed at assignment: its offset waits for it
    RESUME = "resume"  # at fal but not resumed yet (its entry came late): resume and attach
    RECONCILE = "reconcile"  # its submit's outcome is unknown, not taken up yet: ask fal
    SKIP_DUPLICATE = "skip_duplicate"  # another record of this request_id is held or done
    SKIP_CANCELLED = "skip_cancelled"  # cancelled before it arrived: never submitted
    SKIP_DONE = "skip_done"  # this very record was finished before: a redelivery


@dataclass(frozen=True, slots=True)
class RecordFacts:
    kind: RecordKind
    rejected_before: bool = False  # INVALID: the ledger has this position's rejection
    intake: Intake = Intake.NEW  # REQUEST: the ledger's word on its request_id
    held: bool = False  # a job of this request_id is held here
    attached: bool = False  # ... and its record's offset already waits for it
    cancelled: bool = False  # a cancel for this request_id came first
    room: int = 0  # REQUEST: how many more requests the backlog takes


def decide_record(f: RecordFacts) -> RecordAction:
    if f.kind is RecordKind.INVALID:
        return RecordAction.SKIP_REJECTED if f.rejected_before else RecordAction.REJECT
    if f.kind is RecordKind.CANCEL:
        return RecordAction.CANCEL
    if f.held and f.intake in (Intake.RESUME, Intake.RECONCILE) and not f.attached:
        return RecordAction.ATTACH
    if f.held or f.intake is Intake.DUPLICATE:
        return RecordAction.SKIP_DUPLICATE
    if f.cancelled and f.intake is Intake.NEW:
        return RecordAction.SKIP_CANCELLED
    if f.intake is Intake.DONE:
        return RecordAction.SKIP_DONE
    if f.intake is Intake.RESUME:
        return RecordAction.RESUME
    if f.intake is Intake.RECONCILE:
        return RecordAction.RECONCILE
    if f.room <= 0:
        return RecordAction.NO_ROOM
    return RecordAction.QUEUE
