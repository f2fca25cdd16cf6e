"""The compact store of ended ledger entries, and the view built on it, against plain models:
a dict of rows for the store, a dict of whole entries for the view (what the view held before
it kept ended entries compactly)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from service.adapters.ledger_codec import decode_end, decode_entry, encode_entry
from service.core.ended import Ended, EndedStore, fingerprint
from service.core.ledger import (
    ENTRY_STATES,
    FalRef,
    Intake,
    LedgerEntry,
    LedgerView,
    Source,
)

# --- the store against a dict -----------------------------------------------------------------


def _random_ended(rnd: random.Random) -> Ended:
    return Ended(
        rnd.choice(["finished", "rejected"]),
        rnd.randrange(10**6),
        rnd.choice(["requests", "other"]),
        rnd.randrange(12),
        rnd.randrange(10**12),
    )


@pytest.mark.parametrize(("seed", "flush_min"), [(0, 3), (1, 50), (2, 1000), (3, 7)])
def test_the_store_holds_what_a_dict_of_rows_holds_through_merges_removals_and_expiry(
    seed: int, flush_min: int
) -> None:
    """Puts, removals (tombstones) and expiry in any order, merged into the main run at any
    size: every read agrees with a dict, including the counts and a snapshot loaded back."""
    rnd = random.Random(seed)
    store = EndedStore(flush_min=flush_min, flush_max=2000)
    model: dict[int, Ended] = {}
    cutoff = -(2**62)

    def visible() -> dict[int, Ended]:
        return {fp: e for fp, e in model.items() if e.at_ms >= cutoff}

    for step in range(6000):
        fp = fingerprint(f"k{rnd.randrange(1500)}")
        roll = rnd.random()
        if roll < 0.8:
            ended = _random_ended(rnd)
            store.put(fp, ended)
            model[fp] = ended
        elif roll < 0.95:
            store.remove(fp)
            model.pop(fp, None)
        else:
            asked = rnd.randrange(10**5) if rnd.random() < 0.9 else -5  # sometimes backwards
            before = len(visible())
            cutoff = max(cutoff, asked)
            assert store.expire(asked) == before - len(visible())
        if step % 101 == 0:
            seen = visible()
            for key in list(model)[:40]:
                assert store.get(key) == seen.get(key)
            assert len(store) == len(seen)
            assert store.count("finished") == sum(e.state == "finished" for e in seen.values())
            assert store.count("rejected") == sum(e.state == "rejected" for e in seen.values())
    assert dict(store) == visible()
    again = EndedStore()
    again.load(store.snapshot())
    assert dict(again) == visible()
    assert len(again) == len(visible())


def test_expired_rows_leave_memory_once_they_are_a_64th_of_the_run() -> None:
    """Expiry hides rows at once; the main run is copied without them only when enough have
    aged out (one copy per 1/64 of the run, not one per expiry round)."""
    store = EndedStore(flush_min=10, flush_max=10)
    for i in range(6400):
        store.put(fingerprint(f"k{i}"), Ended("finished", i, "t", 0, i))
    store.flush()
    full = store.nbytes()
    assert store.expire(50) == 50  # under 1/64 of 6400: hidden, still in memory
    assert len(store) == 6350
    assert store.get(fingerprint("k49")) is None
    assert store.nbytes() == full
    assert store.expire(200) == 150  # 200 aged rows: over 1/64, the run is copied without them
    assert store.nbytes() == full * 6200 // 6400
    assert store.get(fingerprint("k200")) == Ended("finished", 200, "t", 0, 200)


def test_a_row_costs_31_bytes_in_the_main_run() -> None:
    store = EndedStore(flush_min=100, flush_max=100)
    for i in range(1000):
        store.put(fingerprint(f"k{i}"), Ended("finished", i, "t", 0, i))
    store.flush()
    assert store.nbytes() == 31 * 1000


def test_fingerprints_are_stable_across_processes() -> None:
    """A checkpoint keeps fingerprints: they are BLAKE2b's, not Python's per-process hash."""
    assert fingerprint("order-8841") == 14941933984387404651
    assert fingerprint("order-8841") != fingerprint("order-8842")
    assert 0 <= fingerprint("") < 2**64


def test_a_snapshot_that_is_not_sorted_is_refused_before_anything_is_held() -> None:
    store = EndedStore(flush_min=10)
    for i in range(20):
        store.put(fingerprint(f"k{i}"), Ended("finished", i, "t", 0, i))
    snapshot = store.snapshot()
    shuffled = type(snapshot)(
        snapshot.fingerprint[::-1].copy(),
        snapshot.at_ms,
        snapshot.offset,
        snapshot.partition,
        snapshot.topic,
        snapshot.state,
        snapshot.topics,
        snapshot.cutoff_ms,
    )
    fresh = EndedStore()
    with pytest.raises(ValueError, match="sorted"):
        fresh.load(shuffled)
    assert len(fresh) == 0
    assert np.all(snapshot.fingerprint[1:] > snapshot.fingerprint[:-1])


# --- the view against a dict of whole entries -------------------------------------------------

T0 = datetime(2026, 11, 24, tzinfo=UTC)
RETENTION = timedelta(hours=6)
_RANK = {"intent": 0, "submitted": 1, "finished": 2, "rejected": 2}


class WholeView:
    """What the view decided before it kept ended entries compactly: every entry whole."""

    def __init__(self) -> None:
        self.entries: dict[str, LedgerEntry] = {}
        self.cutoff: datetime | None = None

    def apply(self, key: str, entry: LedgerEntry | None) -> None:
        held = self.entries.get(key)
        if entry is None:
            self.entries.pop(key, None)
        elif held is None or entry.supersedes(held):
            self.entries[key] = entry
            if not entry.open and self.cutoff is not None and entry.at < self.cutoff:
                # An end read after the retention that the last expiry round kept is forgotten
                # at once, not at the next round.
                del self.entries[key]

    def decide(self, request_id: str, source: Source, now: datetime) -> Intake:
        entry = self.entries.get(request_id)
        if entry is None:
            return Intake.NEW
        if entry.state == "submitted":
            return Intake.RESUME if entry.source == source else Intake.DUPLICATE
        if entry.state == "intent":
            return Intake.RECONCILE if entry.source == source else Intake.DUPLICATE
        if now - entry.at > RETENTION:
            return Intake.NEW
        return Intake.DONE if entry.source == source else Intake.DUPLICATE

    def expire(self, now: datetime) -> None:
        self.cutoff = now - RETENTION
        for key in [k for k, e in self.entries.items() if not e.open and now - e.at > RETENTION]:
            del self.entries[key]

    def counts(self) -> dict[str, int]:
        return {s: sum(e.state == s for e in self.entries.values()) for s in ENTRY_STATES}


SOURCES = [Source("req", p, o) for p in range(2) for o in range(3)]
KEYS = [f"r{i}" for i in range(8)]


def _random_entry(rnd: random.Random, now: datetime) -> tuple[str, LedgerEntry | None]:
    state = rnd.choice(["intent", "submitted", "finished", "finished", "rejected"])
    source = rnd.choice(SOURCES)
    key = source.key if state == "rejected" else rnd.choice(KEYS)
    if rnd.random() < 0.04:
        return key, None  # a tombstone (an operator's)
    at = now - timedelta(milliseconds=rnd.randrange(0, 8 * 3600 * 1000))
    fal_id = f"f-{key}-{at.timestamp()}"
    return key, LedgerEntry(
        key=key,
        state=state,  # type: ignore[arg-type]
        source=source,
        at=at,
        fal=FalRef(fal_id, "s", "r", "c") if state == "submitted" else None,
        fal_request_id=fal_id if state == "finished" else None,
        tenant=rnd.choice(["a", "b"]),
        # the amount follows from the entry, as an entry read twice has the same one
        amount=round(at.timestamp() % 7, 3) if state == "finished" else None,
    )


@pytest.mark.parametrize("seed", range(6))
def test_the_view_decides_as_if_it_held_every_entry_whole(seed: int) -> None:
    """Any sequence of entries, late copies, tombstones and expiry rounds: every decision,
    every count, the jobs at fal and what was dead-lettered agree with a view of whole
    entries; so do the writes that landed and a view restored from a snapshot."""
    rnd = random.Random(seed)
    view = LedgerView(RETENTION)
    whole = WholeView()
    now = T0
    for _step in range(1500):
        roll = rnd.random()
        if roll < 0.05:
            now += timedelta(minutes=rnd.randrange(1, 90))
            view.expire(now)
            whole.expire(now)
        else:
            key, entry = _random_entry(rnd, now)
            view.apply(key, entry)
            whole.apply(key, entry)
            if entry is not None:
                assert view.landed(entry) == (whole.entries.get(key) == entry)
        asked = now + timedelta(minutes=rnd.randrange(0, 120))
        for key in KEYS:
            source = rnd.choice(SOURCES)
            assert view.decide(key, source, asked) is whole.decide(key, source, asked)
        assert view.counts() == whole.counts()
        assert view.at_fal == sum(e.open for e in whole.entries.values())
        assert [view.rejected_before(s) for s in SOURCES] == [
            s.key in whole.entries for s in SOURCES
        ]
    restored = LedgerView(RETENTION)
    restored.restore(view.snapshot())
    for key in KEYS:
        for source in SOURCES:
            assert restored.decide(key, source, now) is view.decide(key, source, now)
    assert restored.counts() == view.counts()
    assert restored.at_fal == view.at_fal
    assert restored.fal_ids() == view.fal_ids()
    assert restored.run_times() == view.run_times()
    for tenant in ("a", "b"):
        assert restored.spend.today(tenant, now) == view.spend.today(tenant, now)
        assert restored.spend.this_month(tenant, now) == view.spend.this_month(tenant, now)


def test_an_ended_job_keeps_its_fal_id_an_hour_and_longer_while_an_older_intent_waits() -> None:
    """fal's history is matched to open intents no earlier than their time less the skew (an
    hour at most): an end older than that, before now and before the oldest intent, cannot be
    a candidate, so its fal request id is no longer held."""
    view = LedgerView(timedelta(days=7))
    here, there = Source("req", 0, 1), Source("req", 0, 2)
    view.apply("a", LedgerEntry("a", "finished", here, T0, fal_request_id="f-a"))
    view.apply("w", LedgerEntry("w", "intent", there, T0 + timedelta(minutes=30), digest="d"))
    view.expire(T0 + timedelta(hours=3))
    assert view.names_fal_job("f-a")  # the intent of 00:30 could still match a job of 23:30
    view.apply("w", LedgerEntry("w", "finished", there, T0 + timedelta(hours=3)))
    view.expire(T0 + timedelta(hours=3))
    assert not view.names_fal_job("f-a")
    assert view.decide("a", here, T0 + timedelta(hours=3)) is Intake.DONE  # dedupe stays


# --- the slim decoding of ended records -------------------------------------------------------


@pytest.mark.parametrize(
    "original",
    [
        LedgerEntry(
            "r1",
            "finished",
            Source("req", 3, 41),
            T0,
            received_at=T0,
            metadata={"order": "o-1"},
            status="succeeded",
            shape="81:720p",
            run_s=41.5,
            tenant="acme",
            fal_request_id="f-1",
            units=5.0625,
            amount=3.0375,
        ),
        LedgerEntry("source:req:1:9", "rejected", Source("req", 1, 9), T0),
        LedgerEntry("r2", "finished", Source("req", 0, 1), T0, status="cancelled"),
    ],
    ids=["finished", "rejected", "finished-bare"],
)
def test_an_end_decoded_slim_keeps_everything_the_view_uses(original: LedgerEntry) -> None:
    value = encode_entry(original, "w-1")
    slim = decode_end(original.key, value)
    whole, _writer = decode_entry(original.key, value)
    assert slim is not None
    kept = ("key", "state", "source", "at", "tenant", "units", "amount", "fal_request_id")
    for name in (*kept, "shape", "run_s"):
        assert getattr(slim, name) == getattr(whole, name), name
    assert slim.metadata is None  # not read: the view does not keep it


def test_open_and_unusual_records_are_left_to_the_whole_decoder() -> None:
    submitted = LedgerEntry(
        "r1", "submitted", Source("req", 0, 1), T0, fal=FalRef("f", "s", "r", "c")
    )
    assert decode_end("r1", encode_entry(submitted, "w")) is None
    odd = json.loads(encode_entry(LedgerEntry("r1", "finished", Source("req", 0, 1), T0), "w"))
    odd["tenant"] = 7  # an older or foreign writer: the whole decoder tolerates it
    assert decode_end("r1", json.dumps(odd).encode()) is None
    assert decode_entry("r1", json.dumps(odd).encode())[0].tenant is None


# --- scope: a replica holding the ended entries of the partitions it owns ---------------------

P0, P1 = ("req", 0), ("req", 1)


def _end(key: str, partition: int, offset: int, at: datetime = T0) -> LedgerEntry:
    return LedgerEntry(
        key, "finished", Source("req", partition, offset), at, tenant="a", amount=1.0
    )


def test_an_owned_scope_keeps_ends_of_held_partitions_and_every_open_job_and_spend() -> None:
    view = LedgerView(timedelta(days=7), whole=False)
    assert view.hold({P0}) == {P0}
    view.apply("a", _end("a", 0, 1))
    view.apply("b", _end("b", 1, 1))  # another replica's partition
    running = LedgerEntry("c", "submitted", Source("req", 1, 2), T0, fal=FalRef("f", "s", "r", "c"))
    view.apply("c", running)
    assert view.decide("a", Source("req", 0, 1), T0) is Intake.DONE
    assert view.decide("b", Source("req", 1, 1), T0) is Intake.NEW  # not held here
    assert view.get("c") == running  # jobs at fal: the whole fleet's (fleet cap, budgets)
    assert view.at_fal == 1
    assert view.spend.today("a", T0) == 2.0  # spend: the whole fleet's
    assert view.counts()["finished"] == 1


def test_a_partition_taken_over_is_backfilled_and_one_handed_back_forgotten() -> None:
    view = LedgerView(timedelta(days=7), whole=False)
    view.hold({P0})
    first = _end("b", 1, 1)
    view.apply("b", first)
    view.apply("x", _end("x", 0, 5))
    assert view.hold({P0, P1}) == {P1}  # only P1 needs reading again
    view.backfill("b", first)
    view.backfill("x", _end("x", 0, 5))  # held already: nothing changes
    view.backfill("b", _end("b", 0, 9, at=T0 - timedelta(hours=1)))  # older: does not win
    assert view.decide("b", Source("req", 1, 1), T0) is Intake.DONE
    assert view.decide("b", Source("req", 1, 2), T0) is Intake.DUPLICATE
    assert view.spend.today("a", T0) == 2.0  # a backfill counts no spend again
    assert view.release({P1}) == 1
    assert view.decide("b", Source("req", 1, 1), T0) is Intake.NEW
    assert view.decide("x", Source("req", 0, 5), T0) is Intake.DONE
    assert view.scope == frozenset({P0})
    view.backfill("b", first)  # a late read of a partition handed back: not kept
    assert view.counts()["finished"] == 1


def test_a_snapshot_keeps_its_scope_and_is_refused_by_a_view_of_the_other_kind() -> None:
    owned = LedgerView(timedelta(days=7), whole=False)
    owned.hold({P0})
    owned.apply("a", _end("a", 0, 1))
    again = LedgerView(timedelta(days=7), whole=False)
    again.restore(owned.snapshot())
    assert again.scope == frozenset({P0})
    assert again.decide("a", Source("req", 0, 1), T0) is Intake.DONE
    with pytest.raises(ValueError, match="scope"):
        LedgerView(timedelta(days=7)).restore(owned.snapshot())
    with pytest.raises(ValueError, match="scope"):
        LedgerView(timedelta(days=7), whole=False).restore(LedgerView(RETENTION).snapshot())
