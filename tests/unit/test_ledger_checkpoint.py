"""The ledger view's local checkpoint: what is saved comes back, and a checkpoint that must not
be trusted is refused with its reason."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from service.adapters.ledger import KafkaLedger
from service.adapters.ledger_checkpoint import CheckpointPlace, CheckpointUnusable
from service.config import load_settings
from service.core.ledger import FalRef, Intake, LedgerEntry, LedgerView, Source

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def place(folder: Path, **changes: object) -> CheckpointPlace:
    values: dict[str, object] = {
        "folder": folder,
        "topic": "lynx.relay.jobs",
        "retention": timedelta(days=7),
        "budget_day": DAY,
        "max_age": timedelta(hours=12),
    }
    values.update(changes)
    return CheckpointPlace(**values)  # type: ignore[arg-type]


def a_view() -> LedgerView:
    view = LedgerView(timedelta(days=7))
    for i in range(300):
        view.apply(
            f"done-{i}",
            LedgerEntry(
                f"done-{i}",
                "finished",
                Source("req", i % 3, i),
                T0 - timedelta(minutes=i),
                tenant="acme",
                amount=3.0375,
                fal_request_id=f"f-{i}",
                shape="81:720p",
                run_s=40.0 + i % 5,
            ),
        )
    view.apply(
        "running",
        LedgerEntry(
            "running",
            "submitted",
            Source("req", 0, 999),
            T0,
            fal=FalRef("f-run", "https://q/s", "https://q/r", "https://q/c"),
            metadata={"order": "o-1"},
            tenant="acme",
            units=5.0625,
        ),
    )
    view.apply("maybe", LedgerEntry("maybe", "intent", Source("req", 1, 1000), T0, digest="d1"))
    bad = Source("req", 2, 77)
    view.apply(bad.key, LedgerEntry(bad.key, "rejected", bad, T0))
    view.expire(T0)
    return view


def test_a_saved_checkpoint_loads_back_the_same_view_and_positions(tmp_path: Path) -> None:
    view = a_view()
    where = place(tmp_path)
    size = where.save(view.snapshot(), {0: 120, 1: 101, 2: 80}, T0)
    assert size == where.path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == [where.path.name]  # no temporary left

    found = where.load(T0 + timedelta(minutes=5), partitions=3)
    assert found is not None
    assert found.positions == {0: 120, 1: 101, 2: 80}
    assert found.written_at == T0
    back = LedgerView(timedelta(days=7))
    back.restore(found.snapshot)
    assert (
        back.counts()
        == view.counts()
        == {
            "intent": 1,
            "submitted": 1,
            "finished": 300,
            "rejected": 1,
        }
    )
    assert back.get("running") == view.get("running")  # an open job comes back whole
    assert back.decide("running", Source("req", 0, 999), T0) is Intake.RESUME
    assert back.decide("maybe", Source("req", 1, 1000), T0) is Intake.RECONCILE
    assert back.decide("done-7", Source("req", 1, 7), T0) is Intake.DONE
    assert back.decide("done-7", Source("req", 0, 5000), T0) is Intake.DUPLICATE
    assert back.rejected_before(Source("req", 2, 77))
    assert back.at_fal == 2
    assert back.units_in_flight("acme") == pytest.approx(5.0625)
    assert back.fal_ids() == view.fal_ids()
    assert back.run_times() == view.run_times()
    assert back.spend.today("acme", T0) == pytest.approx(view.spend.today("acme", T0))


@pytest.mark.parametrize(
    ("changes", "partitions", "reason"),
    [
        ({"topic": "other.jobs"}, 3, "topic"),
        ({}, 6, "partitions"),
        ({"retention": timedelta(days=30)}, 3, "retention_s"),
        ({"budget_day": timedelta(hours=1)}, 3, "budget_day_s"),
        ({"max_age": timedelta(minutes=1)}, 3, "old"),
    ],
)
def test_a_checkpoint_of_another_ledger_or_settings_or_too_old_is_refused(
    tmp_path: Path, changes: dict[str, object], partitions: int, reason: str
) -> None:
    place(tmp_path).save(a_view().snapshot(), {0: 1, 1: 1, 2: 1}, T0)
    reader = place(tmp_path, **changes)
    if "topic" in changes:
        (tmp_path / "lynx.relay.jobs.ledger.npz").rename(reader.path)
    with pytest.raises(CheckpointUnusable, match=reason):
        reader.load(T0 + timedelta(minutes=5), partitions)


def test_no_checkpoint_is_none_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    where = place(tmp_path)
    assert where.load(T0, 3) is None
    for damaged in (b"", b"not a checkpoint at all", b"PK\x03\x04 a zip cut short"):
        where.path.write_bytes(damaged)
        with pytest.raises(CheckpointUnusable, match="unreadable"):
            where.load(T0, 3)
    where.save(a_view().snapshot(), {0: 1, 1: 1, 2: 1}, T0)
    whole = where.path.read_bytes()
    where.path.write_bytes(whole[: len(whole) // 2])  # cut short
    with pytest.raises(CheckpointUnusable, match="unreadable"):
        where.load(T0, 3)


class _FlakyReads(KafkaLedger):
    """The ledger feed with its Kafka reads replaced: the first backfill fails part-way (after
    reading one entry), later ones read ``entries``; catching up has nothing to wait for."""

    def __init__(self, view: LedgerView, entries: list[LedgerEntry]) -> None:
        super().__init__(load_settings({"FAL_KEY": "k"}), view, "test")
        self._parts = [TopicPartition("jobs", p) for p in range(3)]
        self.entries = entries
        self.failures_left = 1

    async def _backfill(self, view: LedgerView, ledger_partitions: set[int]) -> None:
        for entry in self.entries:
            view.backfill(entry.key, entry)
            if self.failures_left:
                self.failures_left -= 1
                raise ConnectionError("broker went away")

    async def catch_up(self) -> None:
        return None


async def test_a_backfill_that_fails_is_read_again_by_the_retry() -> None:
    """A take-over whose backfill fails holds nothing of it (not even what it read), so the
    retry reads the partitions again rather than deciding without their finished requests."""
    view = LedgerView(timedelta(days=7), whole=False)
    done = [
        LedgerEntry(f"d{i}", "finished", Source("req", 1, i), T0 - timedelta(minutes=i))
        for i in range(3)
    ]
    feed = _FlakyReads(view, done)
    with pytest.raises(ConnectionError):
        await feed.take({("req", 1)})
    assert view.scope == frozenset()
    assert view.counts()["finished"] == 0
    await feed.take({("req", 1)})
    assert view.scope == frozenset({("req", 1)})
    assert [view.decide(e.key, e.source, T0) for e in done] == [Intake.DONE] * 3


class _SlowReads(_FlakyReads):
    """A backfill that waits for ``go`` (after reading its first entry)."""

    def __init__(self, view: LedgerView, entries: list[LedgerEntry], folder: Path) -> None:
        super().__init__(view, entries)
        self._checkpoint = place(folder)
        self._ready = True
        self.failures_left = 0
        self.reading = asyncio.Event()
        self.go = asyncio.Event()

    async def _backfill(self, view: LedgerView, ledger_partitions: set[int]) -> None:
        view.backfill(self.entries[0].key, self.entries[0])
        self.reading.set()
        await self.go.wait()
        for entry in self.entries[1:]:
            view.backfill(entry.key, entry)


async def test_no_checkpoint_is_written_while_a_partition_is_half_read(tmp_path: Path) -> None:
    """A checkpoint taken mid-backfill would hold the partition with some of its finished
    requests missing, and a restart from it would not read them again."""
    view = LedgerView(timedelta(days=7), whole=False)
    done = [LedgerEntry(f"d{i}", "finished", Source("req", 1, i), T0) for i in range(3)]
    feed = _SlowReads(view, done, tmp_path)
    taking = asyncio.create_task(feed.take({("req", 1)}))
    await feed.reading.wait()
    await feed.save_checkpoint()
    assert not place(tmp_path).path.exists()
    feed.go.set()
    await taking
    await feed.save_checkpoint()
    found = place(tmp_path).load(datetime.now(UTC), 3)  # (written at the real time)
    assert found is not None
    assert found.snapshot.scope == frozenset({("req", 1)})
    assert len(found.snapshot.ended) == 3
