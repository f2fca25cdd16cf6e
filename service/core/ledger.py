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
from collections import Counter, deque
from collections.abc import Iterable, KeysView
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol

from service.core.budgets import SpendBook, SpendState
from service.core.ended import Ended, EndedColumns, EndedStore, EndState, fingerprint

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


# Not frozen, though treated as immutable everywhere: a frozen dataclass's __init__ sets its 17
# fields through object.__setattr__, 3.6 µs here against 0.4 µs, which was a fifth of reading
# one ledger record at start.
@dataclass(slots=True)
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


# How long the fal request id of an ended job stays indexed (``claimed``): fal's history is
# matched against open intents no earlier than their own time less the skew margin (at most an
# hour, RELAY_RECONCILE_SKEW_S), so an end older than that before the oldest open intent (or
# before now) can never be a candidate.
CLAIM_KEEP = timedelta(hours=1)
# Finished run times kept per shape for a restarted relay's first polls (``run_times``).
RUN_TIMES_KEPT = 64
_RECENT_LIMIT = 65_536  # recent ends indexed before a prune while the ledger is read at start
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _ms(at: datetime) -> int:
    return (at - _EPOCH) // _MS


@dataclass(frozen=True)
class LedgerSnapshot:
    """What a ``LedgerView`` holds, as plain data (``service.adapters.ledger_checkpoint``
    saves it): ended entries as columns, open entries whole, the recent ends' fal request ids,
    the kept run times and the spend book."""

    ended: EndedColumns
    open: list[LedgerEntry]
    recent_ends: list[tuple[str, datetime, str]]
    run_times: list[tuple[str, datetime, float]]
    spend: SpendState
    scope: frozenset[tuple[str, int]] | None = None  # the partitions whose ends it kept


class LedgerView:
    """The latest entry per key, as of the records applied so far.

    Entries of jobs that are or may be at fal (intent, submitted) are held whole; ended ones
    (finished, rejected) only as what dedupe needs (``service.core.ended``: 31 bytes each), with
    their fal request id for an hour (``CLAIM_KEEP``) and their run times for the latest
    ``RUN_TIMES_KEPT`` per shape.
    """

    def __init__(
        self,
        retention: timedelta,
        budget_day: timedelta = timedelta(days=1),
        *,
        whole: bool = True,
    ) -> None:
        self.retention = retention
        # The source partitions whose ended entries are kept; None: every one (RELAY_LEDGER_SCOPE
        # "all"). Entries of jobs at fal, spend and fal ids are kept for every partition: the
        # fleet cap, budgets and fal's history need the whole fleet's.
        self._scope: set[tuple[str, int]] | None = None if whole else set()
        self._retention_ms = retention // _MS
        self._now, self._now_ms = _EPOCH, 0
        self._open: dict[str, LedgerEntry] = {}
        self._ended = EndedStore()
        # Jobs that are, or may be, at fal (submitted or intent, not finished), kept as it
        # changes: the fleet cap counts an unsettled submit as a job at fal.
        self.at_fal = 0
        # fal request ids the ledger names (a job adopted from fal's history must be no other
        # request's), with the key naming each: every open entry's, and recent ends'.
        self._fal_ids: dict[str, str] = {}
        self._recent_ends: dict[str, tuple[datetime, str]] = {}  # key -> (end, fal id)
        self._latest_end: datetime | None = None
        self._recent_limit = _RECENT_LIMIT
        self._run_times: dict[str, deque[tuple[datetime, float]]] = {}
        # What budgets need: finished jobs' cost per tenant and period, counted once per
        # entry, and the expected units of jobs that are or may be at fal, per tenant.
        self.spend = SpendBook(budget_day.total_seconds())
        self._open_units: dict[str, float] = {}

    def apply(self, key: str, entry: LedgerEntry | None) -> None:
        """Apply one ledger record; ``None`` is a tombstone. An entry older than the one held
        is ignored, so the relay can apply its own writes at once and again when read back."""
        fp = fingerprint(key)
        held = self._held(key, fp)
        if entry is None:
            if held is not None:
                self._unindex(key, fp, held)
            return
        if held is None or entry.supersedes(held):
            if held is not None:
                self._unindex(key, fp, held)
            self._index(key, fp, entry)
            if entry.state == "finished" and entry.amount and not _same(entry, held):
                # Our own writes are applied at once and again when read back: once.
                self.spend.add(entry.tenant or _DEFAULT_TENANT, entry.amount, entry.at)

    def _index(self, key: str, fp: int, entry: LedgerEntry) -> None:
        if entry.open:
            self._open[key] = entry
            self.at_fal += 1
            if entry.units:
                self._add_units(entry.tenant or _DEFAULT_TENANT, entry.units)
            if entry.fal is not None:
                self._fal_ids[entry.fal.request_id] = key
            return
        src = entry.source
        if self._scope is None or (src.topic, src.partition) in self._scope:
            # Whatever was held for the key was just removed (``_unindex``): nothing to replace.
            self._ended.put(fp, _ended(entry), absent=True)
        self._forget_recent(key)  # (one an expired end left: its row was invisible)
        if entry.fal_request_id is not None:
            self._fal_ids[entry.fal_request_id] = key
            self._recent_ends[key] = (entry.at, entry.fal_request_id)
            if self._latest_end is None or entry.at > self._latest_end:
                self._latest_end = entry.at
            if len(self._recent_ends) > self._recent_limit:
                # Reading a large ledger at start, before the first ``expire``: the latest end
                # read stands in for now (it is no later), so nothing kept by ``expire`` goes.
                self._unclaim_before(self._claim_cutoff(self._latest_end))
                self._recent_limit = max(_RECENT_LIMIT, 2 * len(self._recent_ends))
        if entry.shape and entry.run_s:
            kept = self._run_times.get(entry.shape)
            if kept is None:
                kept = self._run_times[entry.shape] = deque(maxlen=RUN_TIMES_KEPT)
            kept.append((entry.at, entry.run_s))

    def _unindex(self, key: str, fp: int, held: LedgerEntry) -> None:
        if held.open:
            del self._open[key]
            self.at_fal -= 1
            if held.units:
                self._add_units(held.tenant or _DEFAULT_TENANT, -held.units)
            if held.fal is not None and self._fal_ids.get(held.fal.request_id) == key:
                del self._fal_ids[held.fal.request_id]
        else:
            self._ended.remove(fp)
            self._forget_recent(key)

    def _forget_recent(self, key: str) -> None:
        """Stop indexing the fal request id of ``key``'s end, if it is still indexed."""
        recent = self._recent_ends.pop(key, None)
        if recent is not None and self._fal_ids.get(recent[1]) == key:
            del self._fal_ids[recent[1]]

    def _held(self, key: str, fp: int) -> LedgerEntry | None:
        entry = self._open.get(key)
        if entry is not None:
            return entry
        ended = self._ended.get(fp)
        if ended is None:
            return None
        recent = self._recent_ends.get(key)
        return LedgerEntry(
            key=key,
            state=ended.state,
            source=Source(ended.topic, ended.partition, ended.offset),
            at=_EPOCH + ended.at_ms * _MS,
            fal_request_id=recent[1] if recent is not None else None,
        )

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

    # --- scope: the partitions whose ended entries are kept --------------------------------

    def hold(self, sources: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """Keep the ended entries of these source partitions from now on; the ones not kept
        until now (their entries read so far must be read again, into ``backfill``)."""
        if self._scope is None:
            return set()
        new = sources - self._scope
        self._scope |= new
        return new

    def release(self, sources: set[tuple[str, int]]) -> int:
        """Stop keeping the ended entries of these source partitions; the number forgotten."""
        if self._scope is None:
            return 0
        self._scope -= sources
        return self._ended.drop(sources)

    def holds(self, source: Source) -> bool:
        return self._scope is None or (source.topic, source.partition) in self._scope

    @property
    def scope(self) -> frozenset[tuple[str, int]] | None:
        return None if self._scope is None else frozenset(self._scope)

    def backfill(self, key: str, entry: LedgerEntry | None) -> None:
        """An ended entry read again for a partition just held: only its row is kept (its
        spend, fal id and run time were counted when it was first read)."""
        if entry is None or entry.open or not self.holds(entry.source):
            return
        fp = fingerprint(key)
        held = self._held(key, fp)
        if held is None:
            self._ended.put(fp, _ended(entry), absent=True)
        elif not held.open and entry.supersedes(held):
            self._ended.put(fp, _ended(entry))

    def run_times(self) -> list[tuple[str, float]]:
        """(shape, run time) of the latest finished jobs held per shape, oldest first."""
        kept = [(at, shape, s) for shape, runs in self._run_times.items() for at, s in runs]
        return [(shape, s) for _at, shape, s in sorted(kept, key=lambda x: x[0])]

    def submitted(self) -> list[LedgerEntry]:
        """Entries of jobs at fal, not yet finished."""
        return [e for e in self._open.values() if e.state == "submitted"]

    def intents(self) -> list[LedgerEntry]:
        """Submits sent (or about to be) with no answer recorded: fal may have these jobs."""
        return [e for e in self._open.values() if e.state == "intent"]

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
        """The entry held for ``key``: whole for a job that is or may be at fal; for an ended
        one only its state, source and time (and fal request id while it is indexed)."""
        return self._held(key, fingerprint(key))

    def open_entry(self, key: str) -> LedgerEntry | None:
        """The entry of a job that is or may be at fal (intent, submitted), whole."""
        return self._open.get(key)

    def decide(self, request_id: str, source: Source, now: datetime) -> Intake:
        entry = self._open.get(request_id)
        if entry is not None:
            if entry.state == "submitted":
                return Intake.RESUME if entry.source == source else Intake.DUPLICATE
            return Intake.RECONCILE if entry.source == source else Intake.DUPLICATE
        ended = self._ended.position(fingerprint(request_id))
        if ended is None:
            return Intake.NEW
        at_ms, topic, partition, offset = ended
        if now is not self._now:  # one clock reading serves a whole batch of records
            self._now, self._now_ms = now, _ms(now)
        if self._now_ms - at_ms > self._retention_ms:
            return Intake.NEW
        same = offset == source.offset and partition == source.partition and topic == source.topic
        return Intake.DONE if same else Intake.DUPLICATE

    def landed(self, entry: LedgerEntry) -> bool:
        """Whether ``entry`` is what the view holds for its key. The rule for a write whose
        acknowledgement was lost: a Kafka transaction can commit and still be reported as
        failed, so before writing again the view is caught up and asked; a write that landed
        is not repeated (it would publish a second result)."""
        if entry.open:
            return self._open.get(entry.key) == entry
        return _same(entry, self.get(entry.key))

    def rejected_before(self, source: Source) -> bool:
        """This exact message was dead-lettered already (its offset was not yet committed)."""
        return self._ended.get(fingerprint(source.key)) is not None

    def expire(self, now: datetime) -> int:
        """Forget ended entries older than the retention; the number forgotten.

        Entries of jobs that are or may be at fal are kept whatever their age: they are how a
        job is found again.
        """
        self.spend.prune(now)
        cutoff = now - self.retention
        gone = self._ended.expire(_ms(cutoff))
        self._unclaim_before(max(cutoff, self._claim_cutoff(now)))
        for runs in self._run_times.values():
            while runs and runs[0][0] < cutoff:
                runs.popleft()
        return gone

    def _claim_cutoff(self, now: datetime) -> datetime:
        """Ends before this cannot be matched to an open intent (see ``CLAIM_KEEP``)."""
        oldest_intent = min((e.at for e in self.intents()), default=now)
        return min(now, oldest_intent) - CLAIM_KEEP

    def _unclaim_before(self, cutoff: datetime) -> None:
        for key in [k for k, (at, _id) in self._recent_ends.items() if at < cutoff]:
            self._forget_recent(key)

    def snapshot(self) -> LedgerSnapshot:
        """Everything the view holds, for a checkpoint (``restore`` takes it back). The ended
        columns are shared, not copied: they are never written in place."""
        return LedgerSnapshot(
            ended=self._ended.snapshot(),
            open=list(self._open.values()),
            recent_ends=[(k, at, fal_id) for k, (at, fal_id) in self._recent_ends.items()],
            run_times=[(shape, at, s) for shape, runs in self._run_times.items() for at, s in runs],
            spend=self.spend.state(),
            scope=self.scope,
        )

    def restore(self, snapshot: LedgerSnapshot) -> None:
        """Hold what ``snapshot`` held; the view must be new (nothing applied yet)."""
        if len(self) or self._recent_ends:
            raise ValueError("restore into a new view only")
        if (snapshot.scope is None) != (self._scope is None):
            raise ValueError("a snapshot of a view that kept another scope of partitions")
        self._ended.load(snapshot.ended)
        for entry in snapshot.open:
            self.apply(entry.key, entry)
        for key, at, fal_id in snapshot.recent_ends:
            self._recent_ends[key] = (at, fal_id)
            self._fal_ids.setdefault(fal_id, key)
        for shape, at, seconds in sorted(snapshot.run_times, key=lambda r: r[1]):
            self._run_times.setdefault(shape, deque(maxlen=RUN_TIMES_KEPT)).append((at, seconds))
        self.spend.load(snapshot.spend)
        if snapshot.scope is not None:
            self._scope = set(snapshot.scope)

    def counts(self) -> dict[str, int]:
        counter = Counter(e.state for e in self._open.values())
        counter["finished"] = self._ended.count("finished")
        counter["rejected"] = self._ended.count("rejected")
        return {state: counter.get(state, 0) for state in ENTRY_STATES}

    def ended_bytes(self) -> int:
        """Bytes of the compact store's main run (what ended entries cost, the memtable aside)."""
        return self._ended.nbytes()

    def __len__(self) -> int:
        return len(self._open) + len(self._ended)


def _ended(entry: LedgerEntry) -> Ended:
    src = entry.source
    state: EndState = "finished" if entry.state == "finished" else "rejected"
    return Ended(state, _ms(entry.at), src.topic, src.partition, src.offset)


def _same(entry: LedgerEntry, held: LedgerEntry | None) -> bool:
    """Whether ``held`` is ``entry`` as far as the view keeps it (an ended entry is kept as
    its state, source and time, to the millisecond)."""
    if held is None:
        return False
    if entry.open or held.open:
        return entry == held
    return (
        entry.state == held.state and entry.source == held.source and _ms(entry.at) == _ms(held.at)
    )


class LedgerSink(Protocol):
    """What the ledger feed applies records to: the relay's ``LedgerView``, or a tool's fold."""

    def apply(self, key: str, entry: LedgerEntry | None) -> None: ...

    def expire(self, now: datetime) -> int: ...


class WholeEntries:
    """The latest whole entry of each of ``keys`` (what ``lynx-relay requests show`` prints):
    a tool's read of a few requests, never the relay's view of all."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = set(keys)
        self._entries: dict[str, LedgerEntry] = {}

    def apply(self, key: str, entry: LedgerEntry | None) -> None:
        if key not in self._keys:
            return
        held = self._entries.get(key)
        if entry is None:
            self._entries.pop(key, None)
        elif held is None or entry.supersedes(held):
            self._entries[key] = entry

    def expire(self, now: datetime) -> int:
        return 0

    def get(self, key: str) -> LedgerEntry | None:
        return self._entries.get(key)


class SpendLines:
    """(tenant, end, units, amount) of every finished job that ended in ``[since, until)``,
    each once (what ``lynx-relay spend`` sums); a ``LedgerView`` tells a record read twice."""

    def __init__(self, retention: timedelta, since: datetime, until: datetime) -> None:
        self._view = LedgerView(retention)
        self._since, self._until = since, until
        self.lines: list[tuple[str | None, datetime, float | None, float | None]] = []

    def apply(self, key: str, entry: LedgerEntry | None) -> None:
        if (
            entry is not None
            and entry.state == "finished"
            and self._since <= entry.at < self._until
            and not _same(entry, self._view.get(key))
        ):
            self.lines.append((entry.tenant, entry.at, entry.units, entry.amount))
        self._view.apply(key, entry)

    def expire(self, now: datetime) -> int:
        return 0
