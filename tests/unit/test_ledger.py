"""The ledger view's decision: new, resume, duplicate or done."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from service.adapters.ledger_codec import decode_entry, encode_entry
from service.core.ledger import FalRef, Intake, LedgerEntry, LedgerView, Source

T0 = datetime(2026, 11, 24, tzinfo=UTC)
HERE = Source("req", 0, 5)
ELSEWHERE = Source("req", 1, 9)
FAL = FalRef("f-1", "s", "r", "c")


def entry(
    state: Literal["submitted", "finished", "rejected"],
    source: Source = HERE,
    at: datetime = T0,
    key: str = "r1",
) -> LedgerEntry:
    fal = FAL if state == "submitted" else None
    return LedgerEntry(key=key, state=state, source=source, at=at, fal=fal)


def view(*entries: LedgerEntry, days: float = 7) -> LedgerView:
    v = LedgerView(timedelta(days=days))
    for e in entries:
        v.apply(e.key, e)
    return v


def test_unknown_ids_are_new() -> None:
    assert view().decide("r1", HERE, T0) is Intake.NEW


def test_a_job_at_fal_is_resumed_from_its_own_record_and_duplicated_by_any_other() -> None:
    v = view(entry("submitted"))
    assert v.decide("r1", HERE, T0) is Intake.RESUME
    assert v.decide("r1", ELSEWHERE, T0) is Intake.DUPLICATE


def test_a_finished_job_is_done_for_its_record_and_a_duplicate_for_others_until_retention() -> None:
    v = view(entry("finished"), days=1)
    assert v.decide("r1", HERE, T0 + timedelta(hours=1)) is Intake.DONE
    assert v.decide("r1", ELSEWHERE, T0 + timedelta(hours=23)) is Intake.DUPLICATE
    assert v.decide("r1", ELSEWHERE, T0 + timedelta(days=2)) is Intake.NEW


def test_entries_never_go_backwards_when_read_back_late() -> None:
    """The relay applies its own writes at once and the feed reads them back later: an older
    'submitted' must not undo a newer 'finished'."""
    v = view(entry("submitted"), entry("finished", at=T0 + timedelta(seconds=3)))
    v.apply("r1", entry("submitted"))
    assert v.decide("r1", HERE, T0) is Intake.DONE
    v.apply("r1", None)  # a tombstone removes
    assert v.decide("r1", HERE, T0) is Intake.NEW


def test_rejections_are_keyed_by_source_and_expire_but_running_jobs_do_not() -> None:
    rejected = entry("rejected", key=HERE.key)
    v = view(rejected, entry("submitted", key="old-but-running"), days=1)
    assert v.rejected_before(HERE)
    assert not v.rejected_before(ELSEWHERE)
    assert v.expire(T0 + timedelta(days=2)) == 1
    assert not v.rejected_before(HERE)
    assert v.counts() == {"submitted": 1, "finished": 0, "rejected": 0}
    assert [e.key for e in v.submitted()] == ["old-but-running"]


@pytest.mark.parametrize(
    "original",
    [
        LedgerEntry(
            key="r1",
            state="submitted",
            source=HERE,
            at=T0,
            fal=FAL,
            received_at=T0,
            metadata={"tenant": "acme"},
            deadline=T0 + timedelta(hours=1),
        ),
        LedgerEntry(
            key="r1",
            state="finished",
            source=HERE,
            at=T0,
            status="succeeded",
            shape="720p|16:9|81|None",
            run_s=184.25,
        ),
    ],
)
def test_the_wire_format_round_trips(original: LedgerEntry) -> None:
    decoded, writer = decode_entry("r1", encode_entry(original, "w-1"))
    assert (decoded, writer) == (original, "w-1")


def test_finished_run_times_come_back_oldest_first() -> None:
    later = T0 + timedelta(seconds=5)
    v = view(
        LedgerEntry(key="b", state="finished", source=HERE, at=later, shape="s", run_s=20.0),
        LedgerEntry(key="a", state="finished", source=ELSEWHERE, at=T0, shape="s", run_s=10.0),
        entry("submitted", key="c"),
    )
    assert v.run_times() == [("s", 10.0), ("s", 20.0)]


def test_an_end_beats_its_submit_whatever_the_writers_clocks_say() -> None:
    """A replica whose clock runs behind finishes a job another replica submitted: the
    finished entry still wins, so the job is never resumed (and published) again."""
    submitted = entry("submitted", at=T0 + timedelta(seconds=30))
    finished = entry("finished", at=T0)  # written later, by a clock 30 s behind
    v = view(submitted)
    v.apply("r1", finished)
    assert v.decide("r1", HERE, T0 + timedelta(seconds=31)) is Intake.DONE
    v.apply("r1", submitted)  # read back late: still done
    assert v.decide("r1", HERE, T0 + timedelta(seconds=31)) is Intake.DONE


def test_the_count_of_jobs_at_fal_follows_every_change() -> None:
    """``at_fal`` (what the fleet cap reads) counts submitted entries as they come, end,
    are read back late, are tombstoned and expire."""
    v = view(entry("submitted", key="a"), entry("submitted", key="b", source=ELSEWHERE))
    assert v.at_fal == 2
    v.apply("a", entry("submitted", key="a"))  # our own write read back
    assert v.at_fal == 2
    v.apply("a", entry("finished", key="a", at=T0 + timedelta(seconds=5)))
    assert v.at_fal == 1
    v.apply("a", entry("submitted", key="a"))  # a late copy of the submit changes nothing
    assert v.at_fal == 1
    v.apply("b", None)
    assert v.at_fal == 0
    v.apply("c", entry("submitted", key="c"))
    assert v.expire(T0 + timedelta(days=30)) == 1  # "a" ended long ago; "c" is still at fal
    assert v.at_fal == 1
    assert v.at_fal == v.counts()["submitted"]
