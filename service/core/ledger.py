"""The job ledger's state and the one decision it exists for: what to do with a request.

The ledger is a compacted Kafka topic (the adapter reads and writes it); this module is its
in-memory view, fed in log order, and pure. Theory of operation:

- Before a submit is sent (when fal's request history can settle a lost answer), an
  ``intent`` entry records the request_id, a digest of the exact body and the time, with what
  resuming needs. An intent with nothing after it is a submit whose outcome is unknown: fal
  may or may not have the job (``service.core.reconcile`` settles it).
- When fal accepts a job, a ``submitted`` entry (keyed by request_id) records the fal request
  id and URLs, and the source record (topic, partition, offset) it came from. It is durable
  before the relay does anything else with the job.
- When a job ends, a ``finished`` entry replaces it, written in the same Kafka transaction as
  the result event: both land or neither does.
- A message that could not be accepted gets a ``rejected`` entry keyed by its source position
  (it may have no usable request_id), in the same transaction as its dead-letter copy.

When a record is fetched, ``decide`` says: NEW (submit it), RESUME (fal already has this exact
record's job: watch it, do not submit), RECONCILE (this record's submit was sent and its
outcome is unknown: ask fal's history, do not submit yet), DUPLICATE (another record with
this request_id is in flight or finished within the retention: skip), or DONE (this very
record was finished before a crash or a rebalance stopped its offset from being committed:
skip).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import KeysView
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from service.core.budgets import SpendBook

_DEFAULT_TENANT = "default"  # a request without a tenant (``service.messages``)


class Source(NamedTuple):
    topic: str
    partition: int
    offset: int

    @property
    def key(self) -> str:
        """The ledger key of a rejected message: its position (it may have no request_id)."""
        return f"source:{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class FalRef:
    """A job at fal: what is needed to watch, fetch and cancel it (the ids and URLs fal gave
    at submit). The ledger keeps it, and the fal adapter takes it."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str


EntryState = Literal["intent", "submitted", "finished", "rejected"]
ENTRY_STATES: tuple[EntryState, ...] = ("intent", "submitted", "finished", "rejected")
# For one source record, the order its entries are written in: a later one always wins.
_RANK = {"intent": 0, "submitted": 1, "finished": 2, "rejected": 2}


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    key: str
    state: EntryState
    source: Source
    at: datetime  # when it was written (submit time, or the end of the job)
    fal: FalRef | None = None
    received_at: datetime | None = None
    metadata: dict[str, Any] | None = None  # echoed into the result event of a resumed job
    deadline: datetime | None = None  # the request's deadline, kept for a resumed job
    status: str | None = None  # the result status, for finished entries
    shape: str | None = None  # finished jobs: what their run time depends on ...
    run_s: float | None = None  # ... and that run time, so a restarted relay polls warm
    tenant: str | None = None  # intent and submitted entries: whose job it is
    digest: str | None = None  # intent: the digest of the body sent (``core.reconcile``)
    fal_request_id: str | None = None  # finished: its fal job, if one was made
    # intent and submitted: the units the job is expected to bill; finished: the units it
    # cost (billed, or estimated), with their amount (``core.cost``). None: nothing billed.
    units: float | None = None
    amount: float | None = None

    def supersedes(self, held: LedgerEntry) -> bool:
        """Whether this entry replaces ``held`` (same key). For one source record an end
        always beats its submit, and a submit its intent, whatever the clocks of the replicas
        that wrote them say (a later intent of the same record, its submit sent again, beats
        an earlier one); between different records (a request_id used again after the
        retention) the later one wins. Entries may be applied twice or late (our own, read
        back), never backwards."""
        if self.source == held.source:
            return _RANK[self.state] >= _RANK[held.state] and (
                self.state != "intent" or held.state != "intent" or self.at >= held.at
            )
        return self.at >= held.at

    @property
    def fal_id(self) -> str | None:
        """The fal request id this entry names (a submitted or a finished job's)."""
        return self.fal.request_id if self.fal is not None else self.fal_request_id

    @property
    def open(self) -> bool:
        """A job that is, or may be, at fal: never expired, always taken over."""
        return self.state in ("intent", "submitted")


def ledger_time(at: datetime) -> datetime:
    """Ledger times are kept to the millisecond, as they are written, so an entry compares
    equal to itself read back (see ``LedgerView.landed``)."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class Intake(enum.Enum):
    NEW = "new"
    RESUME = "resume"
    RECONCILE = "reconcile"
    DUPLICATE = "duplicate"
    DONE = "done"


class LedgerView:
    """The latest entry per key, as of the records applied so far."""

    def __init__(self, retention: timedelta, budget_day: timedelta = timedelta(days=1)) -> None:
        self.retention = retention
        self._entries: dict[str, LedgerEntry] = {}
        # Jobs that are, or may be, at fal (submitted or intent, not finished), kept as it
        # changes: the fleet cap counts an unsettled submit as a job at fal.
        self.at_fal = 0
        # fal request ids the ledger names (a job adopted from fal's history must be no other
        # request's), with the key naming each.
        self._fal_ids: dict[str, str] = {}
        # What budgets need: finished jobs' cost per tenant and period, counted once per
        # entry, and the expected units of jobs that are or may be at fal, per tenant.
        self.spend = SpendBook(budget_day.total_seconds())
        self._open_units: dict[str, float] = {}

    def apply(self, key: str, entry: LedgerEntry | None) -> None:
        """Apply one ledger record; ``None`` is a tombstone. An entry older than the one held
        is ignored, so the relay can apply its own writes at once and again when read back."""
        held = self._entries.get(key)
        if entry is None:
            if held is not None:
                self._forget(key, held)
            return
        if held is None or entry.supersedes(held):
            if held is not None:
                self._unindex(key, held)
            self._entries[key] = entry
            self.at_fal += entry.open
            if (fal_id := entry.fal_id) is not None:
                self._fal_ids[fal_id] = key
            if entry.open and entry.units:
                self._add_units(entry.tenant or _DEFAULT_TENANT, entry.units)
            if entry.state == "finished" and entry.amount and entry != held:
                # Our own writes are applied at once and again when read back: once.
                self.spend.add(entry.tenant or _DEFAULT_TENANT, entry.amount, entry.at)

    def _unindex(self, key: str, held: LedgerEntry) -> None:
        self.at_fal -= held.open
        fal_id = held.fal_id
        if fal_id is not None and self._fal_ids.get(fal_id) == key:
            del self._fal_ids[fal_id]
        if held.open and held.units:
            self._add_units(held.tenant or _DEFAULT_TENANT, -held.units)

    def _add_units(self, tenant: str, units: float) -> None:
        left = self._open_units.get(tenant, 0.0) + units
        if left > 1e-9:
            self._open_units[tenant] = left
        else:
            self._open_units.pop(tenant, None)

    def units_in_flight(self, tenant: str | None = None) -> float:
        """Expected units of the jobs that are or may be at fal: a tenant's, or everyone's."""
        if tenant is None:
            return sum(self._open_units.values())
        return self._open_units.get(tenant, 0.0)

    def _forget(self, key: str, held: LedgerEntry) -> None:
        del self._entries[key]
        self._unindex(key, held)

    def run_times(self) -> list[tuple[str, float]]:
        """(shape, run time) of the finished jobs held, oldest first."""
        done = [e for e in self._entries.values() if e.shape and e.run_s]
        return [(e.shape, e.run_s) for e in sorted(done, key=lambda e: e.at) if e.shape and e.run_s]

    def submitted(self) -> list[LedgerEntry]:
        """Entries of jobs at fal, not yet finished."""
        return [e for e in self._entries.values() if e.state == "submitted"]

    def finished(self) -> list[LedgerEntry]:
        """Entries of ended jobs held (within the retention)."""
        return [e for e in self._entries.values() if e.state == "finished"]

    def intents(self) -> list[LedgerEntry]:
        """Submits sent (or about to be) with no answer recorded: fal may have these jobs."""
        return [e for e in self._entries.values() if e.state == "intent"]

    def names_fal_job(self, fal_request_id: str) -> bool:
        """Whether a ledger entry names this fal job (it is some request's, not to adopt)."""
        return fal_request_id in self._fal_ids

    def fal_ids(self) -> set[str]:
        """Every fal request id the ledger names (a copy)."""
        return set(self._fal_ids)

    def claimed(self) -> KeysView[str]:
        """The same, live and without a copy (for one matching round)."""
        return self._fal_ids.keys()

    def get(self, key: str) -> LedgerEntry | None:
        return self._entries.get(key)

    def decide(self, request_id: str, source: Source, now: datetime) -> Intake:
        entry = self._entries.get(request_id)
        if entry is None:
            return Intake.NEW
        if entry.state == "submitted":
            return Intake.RESUME if entry.source == source else Intake.DUPLICATE
        if entry.state == "intent":
            return Intake.RECONCILE if entry.source == source else Intake.DUPLICATE
        if now - entry.at > self.retention:
            return Intake.NEW
        return Intake.DONE if entry.source == source else Intake.DUPLICATE

    def landed(self, entry: LedgerEntry) -> bool:
        """Whether ``entry`` is what the view holds for its key. The rule for a write whose
        acknowledgement was lost: a Kafka transaction can commit and still be reported as
        failed, so before writing again the view is caught up and asked; a write that landed
        is not repeated (it would publish a second result)."""
        return self._entries.get(entry.key) == entry

    def rejected_before(self, source: Source) -> bool:
        """This exact message was dead-lettered already (its offset was not yet committed)."""
        return source.key in self._entries

    def expire(self, now: datetime) -> int:
        """Forget ended entries older than the retention; the number forgotten.

        Entries of jobs that are or may be at fal are kept whatever their age: they are how a
        job is found again.
        """
        self.spend.prune(now)
        old = [k for k, e in self._entries.items() if not e.open and now - e.at > self.retention]
        for key in old:
            self._forget(key, self._entries[key])
        return len(old)

    def counts(self) -> dict[str, int]:
        counter = Counter(e.state for e in self._entries.values())
        return {state: counter.get(state, 0) for state in ENTRY_STATES}

    def __len__(self) -> int:
        return len(self._entries)
