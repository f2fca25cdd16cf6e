"""A local checkpoint of the ledger view: what a restarted replica loads instead of reading
the whole ledger topic (RELAY_LEDGER_CHECKPOINT_DIR).

One file per ledger topic, ``<dir>/<topic>.ledger.npz``: an uncompressed NumPy archive of the
ended entries' columns (``service.core.ended``) and one JSON document (``meta``) with the open
entries (in the ledger's own record format, ``ledger_codec``), the recent ends' fal request
ids, the kept run times, the spend book, and the position reached in each partition of the
topic. It is written to a temporary name and renamed, so a reader sees a whole checkpoint or
the previous one.

A checkpoint is trusted only when it names the same topic and partition count, was written
with the same retention and budget day, is younger than RELAY_LEDGER_CHECKPOINT_MAX_AGE_S,
and none of its positions lies past the end of its partition (a topic deleted and created
again). Otherwise it is ignored and the ledger is read whole, which is always correct: the
checkpoint only saves reading. Reading on from its positions is correct because the view keeps
the newer of two entries and counts an entry's cost once, so an entry both in the checkpoint
and in the tail (the relay's own writes are applied before they are read back) is harmless.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from service.adapters.ledger_codec import decode_entry, encode_entry
from service.core.budgets import SpendState
from service.core.ended import EndedColumns
from service.core.ledger import LedgerSnapshot
from service.messages import format_timestamp

_FORMAT = 1
_COLUMNS = ("fingerprint", "at_ms", "offset", "partition", "topic", "state")
_DTYPES = {
    "fingerprint": np.uint64,
    "at_ms": np.int64,
    "offset": np.int64,
    "partition": np.uint32,
    "topic": np.uint16,
    "state": np.uint8,
}


class CheckpointUnusable(Exception):
    """The checkpoint exists but is not to be trusted (the message says why)."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the view's content and the position reached per partition."""

    snapshot: LedgerSnapshot
    positions: dict[int, int]
    written_at: datetime


@dataclass(frozen=True)
class CheckpointPlace:
    """Where a ledger's checkpoint lives and what it must match to be trusted."""

    folder: Path
    topic: str
    retention: timedelta
    budget_day: timedelta
    max_age: timedelta

    @property
    def path(self) -> Path:
        return self.folder / f"{self.topic}.ledger.npz"

    def save(self, snapshot: LedgerSnapshot, positions: dict[int, int], now: datetime) -> int:
        """Write the checkpoint (blocking: call it off the event loop); its size in bytes."""
        meta = {
            "format": _FORMAT,
            "topic": self.topic,
            "partitions": len(positions),
            "retention_s": self.retention.total_seconds(),
            "budget_day_s": self.budget_day.total_seconds(),
            "written_at": format_timestamp(now),
            "positions": {str(p): o for p, o in positions.items()},
            "topics": list(snapshot.ended.topics),
            "cutoff_ms": snapshot.ended.cutoff_ms,
            "open": [[e.key, encode_entry(e, "checkpoint").decode("utf-8")] for e in snapshot.open],
            "recent_ends": [[k, format_timestamp(at), f] for k, at, f in snapshot.recent_ends],
            "run_times": [[shape, format_timestamp(at), s] for shape, at, s in snapshot.run_times],
            "spend": {"days": snapshot.spend.days, "months": snapshot.spend.months},
            "scope": None if snapshot.scope is None else sorted(snapshot.scope),
        }
        arrays = {name: getattr(snapshot.ended, name) for name in _COLUMNS}
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".checkpoint-", dir=self.folder)
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return self.path.stat().st_size

    def load(self, now: datetime, partitions: int) -> Checkpoint | None:
        """The checkpoint, or None when there is none; raises ``CheckpointUnusable`` when
        there is one that must not be trusted."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return None
        # The file is ours to close, whatever NumPy makes of its bytes.
        with handle:
            try:
                with np.load(handle, allow_pickle=False) as archive:
                    meta = json.loads(archive["meta"].tobytes())
                    self._check(meta, now, partitions)
                    columns = {
                        name: archive[name].astype(_DTYPES[name], copy=False) for name in _COLUMNS
                    }
            except CheckpointUnusable:
                raise
            except Exception as exc:  # whatever the bytes are: the ledger is read whole instead
                raise CheckpointUnusable(f"unreadable: {exc!r}") from None
        if len({len(column) for column in columns.values()}) > 1:
            raise CheckpointUnusable("unreadable: columns of different lengths")
        try:
            snapshot = _snapshot(meta, columns, self.budget_day)
            positions = {int(p): int(o) for p, o in meta["positions"].items()}
            written_at = datetime.fromisoformat(meta["written_at"])
        except Exception as exc:  # (as above)
            raise CheckpointUnusable(f"unreadable: {exc!r}") from None
        return Checkpoint(snapshot, positions, written_at)

    def _check(self, meta: dict[str, Any], now: datetime, partitions: int) -> None:
        expected = {
            "format": _FORMAT,
            "topic": self.topic,
            "partitions": partitions,
            "retention_s": self.retention.total_seconds(),
            "budget_day_s": self.budget_day.total_seconds(),
        }
        for name, value in expected.items():
            if meta.get(name) != value:
                raise CheckpointUnusable(f"written for {name}={meta.get(name)!r}, not {value!r}")
        age = now - datetime.fromisoformat(meta["written_at"])
        if age > self.max_age:
            raise CheckpointUnusable(f"{age.total_seconds():.0f} s old, over the maximum age")


def _snapshot(
    meta: dict[str, Any], columns: dict[str, np.ndarray[Any, Any]], budget_day: timedelta
) -> LedgerSnapshot:
    ended = EndedColumns(
        columns["fingerprint"],
        columns["at_ms"],
        columns["offset"],
        columns["partition"],
        columns["topic"],
        columns["state"],
        tuple(str(t) for t in meta["topics"]),
        int(meta["cutoff_ms"]),
    )
    spend = meta["spend"]
    return LedgerSnapshot(
        ended=ended,
        open=[decode_entry(str(key), value.encode("utf-8"))[0] for key, value in meta["open"]],
        recent_ends=[
            (str(k), datetime.fromisoformat(at), str(f)) for k, at, f in meta["recent_ends"]
        ],
        run_times=[
            (str(shape), datetime.fromisoformat(at), float(s)) for shape, at, s in meta["run_times"]
        ],
        scope=None
        if meta.get("scope") is None
        else frozenset((str(t), int(p)) for t, p in meta["scope"]),
        spend=SpendState(
            budget_day.total_seconds(),
            [(str(w), int(d), float(a)) for w, d, a in spend["days"]],
            [(str(w), int(y), int(m), float(a)) for w, y, m, a in spend["months"]],
        ),
    )
