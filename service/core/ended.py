"""The ledger's ended entries (finished jobs, rejected messages), held in 31 bytes each.

What dedupe and the DONE decision need of an ended entry is its key, its time and the source
record it came from; nothing else (metadata, URLs, datetimes) is kept here. A key is held as a
64-bit fingerprint (BLAKE2b of its UTF-8 bytes); two different keys share one with a
probability of about n / 2^64 per lookup (about 4e-13 with 7 million held): a new request
then taken for a duplicate.

Layout (an LSM of one level): a *main* run of parallel NumPy columns sorted by fingerprint
(fingerprint u64, time in ms i64, offset i64, partition u32, topic u16, state u8: 31 bytes a
row, and 1.2 bytes of an index of where each run of rows sharing the top bits starts), and a
*memtable* for what came since (the same columns as ``array``s in arrival order, and a dict
from fingerprint to row); the memtable is merged into the main run when it reaches a 16th of
it (O(n) copies, no sort of the main run). A lookup is one dict probe and a binary search of
the few rows sharing the key's top bits. The main run's arrays are never written in place,
only replaced, so a snapshot of them (``snapshot``) may be saved by another thread.

Expiry is logical at once (entries older than the last cutoff are invisible) and physical when
enough have aged out to be worth one copy of the main run.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

EndState = Literal["finished", "rejected"]
END_STATES: tuple[EndState, ...] = ("finished", "rejected")
_STATE_CODE = {"finished": 1, "rejected": 2}

# Memtable rows before a merge into the main run: a 16th of the main run, within these bounds
# (about 15 to 60 MiB of dict rows); a merge of 7 million rows takes about 0.2 s here.
FLUSH_MIN = 65_536
FLUSH_MAX = 262_144
# Expired rows stay in the main run (invisible) until they are this share of it: one copy of
# the run per 1/64 of it aged out, not one per expiry round.
_COMPACT_SHARE = 64

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


def fingerprint(key: str) -> int:
    """A key's 64-bit fingerprint: stable across processes (a checkpoint keeps it)."""
    return int.from_bytes(blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest())


class Ended(NamedTuple):
    """What is held of an ended entry: its state, its time (ms since the epoch) and where its
    source record is (topic, partition, offset)."""

    state: EndState
    at_ms: int
    topic: str
    partition: int
    offset: int


# A memtable row: (at_ms, topic id, partition, offset, state code); None marks a removal of a
# row of the main run, applied at the next merge.
_Row = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class EndedColumns:
    """A snapshot of the store: its rows as columns, sorted by fingerprint, and its topic
    names."""

    fingerprint: U64
    at_ms: I64
    offset: I64
    partition: npt.NDArray[np.uint32]
    topic: npt.NDArray[np.uint16]
    state: npt.NDArray[np.uint8]
    topics: tuple[str, ...]
    cutoff_ms: int

    def __len__(self) -> int:
        return len(self.fingerprint)


def _empty(topics: tuple[str, ...] = (), cutoff_ms: int = -(2**62)) -> EndedColumns:
    return EndedColumns(
        np.empty(0, np.uint64),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, np.uint32),
        np.empty(0, np.uint16),
        np.empty(0, np.uint8),
        topics,
        cutoff_ms,
    )


class _Memtable:
    """Rows since the last merge: columns in arrival order (``array``: 31 bytes a row, handed
    to NumPy without a copy at the merge) and a dict from fingerprint to row. State 0 marks a
    removal: of a main run's row at the next merge, or simply of this row."""

    def __init__(self) -> None:
        self.index: dict[int, int] = {}
        self.fp = array("Q")
        self.at_ms = array("q")
        self.topic = array("H")
        self.partition = array("I")
        self.offset = array("q")
        self.state = array("B")

    def __len__(self) -> int:
        return len(self.index)

    def row(self, i: int) -> _Row | None:
        state = self.state[i]
        if not state:
            return None
        return (self.at_ms[i], self.topic[i], self.partition[i], self.offset[i], state)

    def set(self, fp: int, row: _Row | None) -> None:
        at_ms, topic, partition, offset, state = row if row is not None else (0, 0, 0, 0, 0)
        i = self.index.get(fp)
        if i is None:
            self.index[fp] = len(self.fp)
            self.fp.append(fp)
            self.at_ms.append(at_ms)
            self.topic.append(topic)
            self.partition.append(partition)
            self.offset.append(offset)
            self.state.append(state)
        else:
            self.at_ms[i], self.topic[i], self.partition[i] = at_ms, topic, partition
            self.offset[i], self.state[i] = offset, state

    def columns(self) -> tuple[npt.NDArray[Any], ...]:
        """(fingerprint, at_ms, topic, partition, offset, state) as NumPy arrays (copies)."""
        return tuple(
            np.array(column, dtype)
            for column, dtype in (
                (self.fp, np.uint64),
                (self.at_ms, np.int64),
                (self.topic, np.uint16),
                (self.partition, np.uint32),
                (self.offset, np.int64),
                (self.state, np.uint8),
            )
        )


class EndedStore:
    """Ended entries by key fingerprint: put, get, remove, expire, snapshot."""

    def __init__(self, flush_min: int = FLUSH_MIN, flush_max: int = FLUSH_MAX) -> None:
        self._flush_min, self._flush_max = flush_min, flush_max
        self._flush_at = flush_min
        self._install(_empty())
        self._mem = _Memtable()
        self._topics: list[str] = []
        self._topic_ids: dict[str, int] = {}
        self._cutoff_ms = -(2**62)  # rows older than this are expired: invisible
        self._counts = {1: 0, 2: 0}  # visible rows per state code

    # --- reads ------------------------------------------------------------------------------

    def get(self, fp: int) -> Ended | None:
        row = self._row(fp)
        if row is None or row[0] < self._cutoff_ms:
            return None
        at_ms, topic, partition, offset, state = row
        return Ended(END_STATES[state - 1], at_ms, self._topics[topic], partition, offset)

    def position(self, fp: int) -> tuple[int, str, int, int] | None:
        """(time in ms, topic, partition, offset) of the visible row, without building an
        ``Ended``: the dedupe lookup of every fetched record."""
        i = self._mem.index.get(fp)
        if i is not None:
            row = self._mem.row(i)
            if row is None or row[0] < self._cutoff_ms:
                return None
            return row[0], self._topics[row[1]], row[2], row[3]
        # The main run's search, inline and reading no column it does not need: each read of
        # a 7-million-row column is a cache miss.
        fps, at_ms, topic, partition, offset, _state = self._views
        run = fp >> self._shift
        end = self._starts[run + 1]
        j = bisect_left(fps, fp, self._starts[run], end)
        if j == end or fps[j] != fp:
            return None
        at = at_ms[j]
        if at < self._cutoff_ms:
            return None
        return at, self._topics[topic[j]], partition[j], offset[j]

    def _row(self, fp: int) -> _Row | None:
        i = self._mem.index.get(fp)
        return self._main_row(fp) if i is None else self._mem.row(i)

    def _main_row(self, fp: int) -> _Row | None:
        fps, at_ms, topic, partition, offset, state = self._views
        run = fp >> self._shift
        end = self._starts[run + 1]
        i = bisect_left(fps, fp, self._starts[run], end)
        if i == end or fps[i] != fp:
            return None
        return (at_ms[i], topic[i], partition[i], offset[i], state[i])

    def count(self, state: EndState) -> int:
        return self._counts[_STATE_CODE[state]]

    def __len__(self) -> int:
        return self._counts[1] + self._counts[2]

    # --- writes -----------------------------------------------------------------------------

    def put(self, fp: int, ended: Ended, *, absent: bool = False) -> None:
        """Hold ``ended`` for this fingerprint, replacing what was held; ``absent``: the caller
        knows nothing visible is held for it (one lookup saved)."""
        if not absent:
            self._forget_count(fp)
        tid = self._topic_ids.get(ended.topic)
        if tid is None:
            tid = self._topic_ids[ended.topic] = len(self._topics)
            self._topics.append(ended.topic)
        code = _STATE_CODE[ended.state]
        self._mem.set(fp, (ended.at_ms, tid, ended.partition, ended.offset, code))
        if ended.at_ms >= self._cutoff_ms:
            self._counts[code] += 1
        if len(self._mem) >= self._flush_at:
            self.flush()

    def remove(self, fp: int) -> None:
        self._forget_count(fp)
        if fp in self._mem.index or self._main_row(fp) is not None:
            self._mem.set(fp, None)  # (a main run's row goes at the next merge)

    def _forget_count(self, fp: int) -> None:
        row = self._row(fp)
        if row is not None and row[0] >= self._cutoff_ms:
            self._counts[row[4]] -= 1

    def flush(self) -> None:
        """Merge the memtable into the main run: rows it replaces or removes are dropped, its
        new rows inserted in fingerprint order; O(main + memtable), no sort of the main run."""
        if not len(self._mem):
            return
        fps, at_ms, topic, partition, offset, state = self._mem.columns()
        self._mem = _Memtable()
        order = np.argsort(fps)
        fps = fps[order]
        main = self._main
        at = np.searchsorted(main.fingerprint, fps)
        inside = at < len(main)
        hit = np.zeros(len(fps), bool)
        hit[inside] = main.fingerprint[at[inside]] == fps[inside]
        if hit.any():
            keep = np.ones(len(main), bool)
            keep[at[hit]] = False
            main = _take(main, keep)
        live = order[state[order] != 0]
        topics = tuple(self._topics)
        if len(live):
            fresh = EndedColumns(
                fps[state[order] != 0],
                at_ms[live],
                offset[live],
                partition[live],
                topic[live],
                state[live],
                topics,
                self._cutoff_ms,
            )
            main = _insert(main, fresh)
        self._install(
            EndedColumns(
                main.fingerprint,
                main.at_ms,
                main.offset,
                main.partition,
                main.topic,
                main.state,
                topics,
                self._cutoff_ms,
            )
        )

    def _install(self, main: EndedColumns) -> None:
        self._main = main
        # Scalar reads go through memoryviews: bisect and indexing on them cost a third of
        # NumPy's scalar calls (0.8 µs against 2.6 µs for a search of 7 million rows here).
        self._views = (
            main.fingerprint.data,
            main.at_ms.data,
            main.topic.data,
            main.partition.data,
            main.offset.data,
            main.state.data,
        )
        self._flush_at = max(self._flush_min, min(self._flush_max, len(main) // 16))
        # Where each run of rows sharing a fingerprint's top bits starts (about 4 rows a run):
        # a lookup bisects 4 rows, not 7 million, so it touches two or three cache lines of
        # the fingerprint column instead of 23 (a tenth of the cost of a search at that
        # size, 1.2 bytes a row).
        bits = max(0, len(main).bit_length() - 2)
        self._shift = 64 - bits
        starts = np.zeros((1 << bits) + 1, np.int64 if len(main) >= 2**32 else np.uint32)
        if bits:  # (NumPy shifts a uint64 by 64 as by 0: one run needs no shift)
            top = (main.fingerprint >> np.uint64(self._shift)).view(np.int64)
            np.cumsum(np.bincount(top, minlength=1 << bits), out=starts[1:])
        else:
            starts[1] = len(main)
        self._starts = starts.data

    def expire(self, cutoff_ms: int) -> int:
        """Forget rows older than ``cutoff_ms``; the number newly forgotten. They vanish from
        reads at once and from memory when they are a 1/64 share of the main run."""
        previous = self._cutoff_ms
        if cutoff_ms <= previous:
            return 0
        self._cutoff_ms = cutoff_ms
        gone = 0
        mem = self._mem
        ats = np.array(mem.at_ms, np.int64)
        aged_rows = np.flatnonzero((np.array(mem.state, np.uint8) != 0) & (ats < cutoff_ms))
        for i in aged_rows.tolist():
            at_ms, code = mem.at_ms[i], mem.state[i]
            # Kept as a removal: a main row under it stays shadowed (it may be newer: a row
            # replaces whatever its writer says it supersedes).
            mem.set(mem.fp[i], None)
            if at_ms >= previous:
                self._counts[code] -= 1
                gone += 1
        main = self._main
        aged = (main.at_ms >= previous) & (main.at_ms < cutoff_ms)
        for fp, code in zip(
            main.fingerprint[aged].tolist(), main.state[aged].tolist(), strict=True
        ):
            if fp not in self._mem.index:  # not shadowed by a newer row or a removal
                self._counts[code] -= 1
                gone += 1
        old = main.at_ms < cutoff_ms
        n_old = int(np.count_nonzero(old))
        if n_old and n_old * _COMPACT_SHARE >= len(main):
            self._install(_take(main, ~old))
        return gone

    def _recount(self) -> None:
        main = self._main
        live = main.state[main.at_ms >= self._cutoff_ms]
        self._counts = {code: int(np.count_nonzero(live == code)) for code in (1, 2)}

    def drop(self, sources: set[tuple[str, int]]) -> int:
        """Forget every row whose source record is in one of these (topic, partition)s; the
        number of visible rows forgotten (a replica handing partitions back, ``LedgerView``'s
        scope)."""
        self.flush()
        main = self._main
        gone = np.zeros(len(main), bool)
        for topic, partition in sources:
            tid = self._topic_ids.get(topic)
            if tid is not None:
                gone |= (main.topic == tid) & (main.partition == partition)
        if not gone.any():
            return 0
        before = len(self)
        self._install(_take(main, ~gone))
        self._recount()
        return before - len(self)

    # --- snapshots --------------------------------------------------------------------------

    def snapshot(self) -> EndedColumns:
        """Every row, as columns sorted by fingerprint: the memtable is merged first, and the
        main run it returns is never written in place (so another thread may save it)."""
        self.flush()
        return self._main

    def load(self, columns: EndedColumns) -> None:
        """Replace everything held with ``columns`` (a ``snapshot``: sorted, each row once)."""
        fps = columns.fingerprint
        if len(fps) > 1 and not bool(np.all(fps[1:] > fps[:-1])):
            raise ValueError("a snapshot's rows are sorted by fingerprint, each once")
        self._topics = list(columns.topics)
        self._topic_ids = {t: i for i, t in enumerate(self._topics)}
        self._mem = _Memtable()
        self._cutoff_ms = columns.cutoff_ms
        self._install(columns)
        self._recount()

    def nbytes(self) -> int:
        """Bytes of the main run's arrays (the memtable not counted)."""
        m = self._main
        return sum(
            a.nbytes for a in (m.fingerprint, m.at_ms, m.offset, m.partition, m.topic, m.state)
        )

    def __iter__(self) -> Iterator[tuple[int, Ended]]:
        """Every visible row (fingerprint, ended): for tests and tools, not the hot path."""
        for fp in sorted(set(self._mem.index) | set(self._main.fingerprint.tolist())):
            if (ended := self.get(fp)) is not None:
                yield fp, ended


def _take(c: EndedColumns, mask: npt.NDArray[np.bool_]) -> EndedColumns:
    return EndedColumns(
        c.fingerprint[mask],
        c.at_ms[mask],
        c.offset[mask],
        c.partition[mask],
        c.topic[mask],
        c.state[mask],
        c.topics,
        c.cutoff_ms,
    )


def _insert(main: EndedColumns, fresh: EndedColumns) -> EndedColumns:
    """``fresh`` (sorted, no fingerprint of ``main``) merged into ``main`` in order."""
    at = np.searchsorted(main.fingerprint, fresh.fingerprint)
    return EndedColumns(
        np.insert(main.fingerprint, at, fresh.fingerprint),
        np.insert(main.at_ms, at, fresh.at_ms),
        np.insert(main.offset, at, fresh.offset),
        np.insert(main.partition, at, fresh.partition),
        np.insert(main.topic, at, fresh.topic),
        np.insert(main.state, at, fresh.state),
        fresh.topics,
        fresh.cutoff_ms,
    )
