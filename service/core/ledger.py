"""The job ledger's state and the one decision it exists for: what to do with a request.

The ledger is a compacted Kafka topic (the adapter reads and writes it); this module is its
in-memory view, fed in log order, and pure. Theory of operation:

- When fal accepts a job, a ``submitted`` entry (keyed by request_id) records the fal request
  id and URLs, and the source record (topic, partition, offset) it came from. It is durable
  before the relay does anything else with the job.
- When a job ends, a ``finished`` entry replaces it, written in the same Kafka transaction as
  the result event: both land or neither does.
- A message that could not be accepted gets a ``rejected`` entry keyed by its source position
  (it may have no usable request_id), in the same transaction as its dead-letter copy.

When a record is fetched, ``decide`` says: NEW (submit it), RESUME (fal already has this exact
record's job: watch it, do not submit), DUPLICATE (another record with this request_id is in
flight or finished within the retention: skip), or DONE (this very record was finished
before a crash or a rebalance stopped its offset from being committed: skip).
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple


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


EntryState = Literal["submitted", "finished", "rejected"]


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
    tenant: str | None = None  # submitted entries: whose job it is, for a resumed job

    def supersedes(self, held: LedgerEntry) -> bool:
        """Whether this entry replaces ``held`` (same key). For one source record an end
        always beats its submit, whatever the clocks of the replicas that wrote them say;
        between different records (a request_id used again after the retention) the later
        one wins. Entries may be applied twice or late (our own, read back), never backwards."""
        if self.source == held.source:
            return self.state != "submitted" or held.state == "submitted"
        return self.at >= held.at


def ledger_time(at: datetime) -> datetime:
    """Ledger times are kept to the millisecond, as they are written, so an entry compares
    equal to itself read back (see ``LedgerView.landed``)."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class Intake(enum.Enum):
    NEW = "new"
    RESUME = "resume"
    DUPLICATE = "duplicate"
    DONE = "done"


class LedgerView:
    """The latest entry per key, as of the records applied so far."""

    def __init__(self, retention: timedelta) -> None:
        self.retention = retention
        self._entries: dict[str, LedgerEntry] = {}
        self.at_fal = 0  # entries of jobs at fal (submitted, not finished), kept as it changes

    def apply(self, key: str, entry: LedgerEntry | None) -> None:
        """Apply one ledger record; ``None`` is a tombstone. An entry older than the one held
        is ignored, so the relay can apply its own writes at once and again when read back."""
        held = self._entries.get(key)
        if entry is None:
            if held is not None:
                self._forget(key, held)
            return
        if held is None or entry.supersedes(held):
            self.at_fal += (entry.state == "submitted") - (
                held is not None and held.state == "submitted"
            )
            self._entries[key] = entry

    def _forget(self, key: str, held: LedgerEntry) -> None:
        del self._entries[key]
        if held.state == "submitted":
            self.at_fal -= 1

    def run_times(self) -> list[tuple[str, float]]:
        """(shape, run time) of the finished jobs held, oldest first."""
        done = [e for e in self._entries.values() if e.shape and e.run_s]
        return [(e.shape, e.run_s) for e in sorted(done, key=lambda e: e.at) if e.shape and e.run_s]

    def submitted(self) -> list[LedgerEntry]:
        """Entries of jobs at fal, not yet finished."""
        return [e for e in self._entries.values() if e.state == "submitted"]

    def get(self, key: str) -> LedgerEntry | None:
        return self._entries.get(key)

    def decide(self, request_id: str, source: Source, now: datetime) -> Intake:
        entry = self._entries.get(request_id)
        if entry is None:
            return Intake.NEW
        if entry.state == "submitted":
            return Intake.RESUME if entry.source == source else Intake.DUPLICATE
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

        Entries of jobs still at fal are kept whatever their age: they are how a job is found
        again.
        """
        old = [
            k
            for k, e in self._entries.items()
            if e.state != "submitted" and now - e.at > self.retention
        ]
        for key in old:
            self._forget(key, self._entries[key])
        return len(old)

    def counts(self) -> dict[str, int]:
        counter = Counter(e.state for e in self._entries.values())
        return {state: counter.get(state, 0) for state in ("submitted", "finished", "rejected")}

    def __len__(self) -> int:
        return len(self._entries)
