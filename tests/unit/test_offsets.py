"""Offset tracking: out-of-order completion in, contiguous committable offsets out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.offsets import OffsetBook, Partition, PartitionOffsets, commit_due

P0 = Partition("t", 0)


def test_commits_only_the_finished_prefix() -> None:
    po = PartitionOffsets()
    for offset in (10, 11, 12, 15):  # gaps are fine: compaction, transaction markers
        po.track(offset)
    po.finish(11)
    assert po.committable() is None  # 10 still running
    po.finish(10)
    assert po.committable() == 12
    po.mark_committed(12)
    assert po.committable() is None
    po.finish(15)
    po.finish(12)
    assert po.committable() == 16
    assert po.unfinished == 0


def test_refuses_going_back_or_finishing_twice() -> None:
    po = PartitionOffsets()
    po.track(5)
    with pytest.raises(ValueError, match="tracked after"):
        po.track(5)
    po.finish(5)
    with pytest.raises(ValueError, match="not pending"):
        po.finish(5)


def test_book_separates_partitions_and_drops_revoked_ones() -> None:
    book = OffsetBook()
    p1 = Partition("t", 1)
    book.track(P0, 0)
    book.track(p1, 7)
    book.finish(p1, 7)
    assert book.committable() == {p1: 8}
    assert book.committable([P0]) == {}
    book.drop([p1])
    assert book.committable() == {}
    assert book.unfinished == 1


def test_commit_cadence() -> None:
    assert commit_due(now=10.0, last_commit_at=9.0, interval=1.0, pending=True)
    assert not commit_due(now=10.0, last_commit_at=9.5, interval=1.0, pending=True)
    assert not commit_due(now=10.0, last_commit_at=0.0, interval=1.0, pending=False)


@given(
    offsets=st.lists(st.integers(0, 10_000), min_size=1, max_size=60, unique=True).map(sorted),
    data=st.data(),
)
def test_committed_offset_never_passes_an_unfinished_one_and_never_goes_back(
    offsets: list[int], data: st.DataObject
) -> None:
    """Property: whatever order records finish in, and whenever we commit, the committed
    offset is at most the smallest unfinished offset and is monotonic; once all are finished
    it is one past the last record."""
    po = PartitionOffsets()
    for offset in offsets:
        po.track(offset)
    order = data.draw(st.permutations(offsets))
    unfinished = set(offsets)
    committed = -1
    for offset in order:
        po.finish(offset)
        unfinished.discard(offset)
        if data.draw(st.booleans()):
            proposal = po.committable()
            if proposal is not None:
                assert proposal > committed
                if unfinished:
                    assert proposal <= min(unfinished)
                po.mark_committed(proposal)
                committed = proposal
    final = po.committable()
    assert (final if final is not None else committed) == offsets[-1] + 1
