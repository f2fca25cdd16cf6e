"""The ledger's record format, the one codec of the ledger topic: the outbox encodes with it,
the ledger feed decodes with it.

Format: key = the entry's key (a request_id, or ``source:<topic>:<partition>:<offset>`` for a
rejected message); value = one JSON object (below); a null value is a tombstone. Every value
names the process that wrote it (``writer``, new at each start), for operators reading the
topic.

    {"v": 1, "state": "intent" | "submitted" | "finished" | "rejected", "writer": "...",
     "source": {"topic", "partition", "offset"}, "at": "<RFC 3339>",
     "fal": {"request_id", "status_url", "response_url", "cancel_url"} | null,
     "received_at": "<RFC 3339>" | null, "metadata": {...} | null, "deadline": ... | null,
     "status": "succeeded" | ... | null, "shape": "..." | null, "run_s": 12.3 | null,
     "tenant": "..." | null, "digest": "<sha256 hex>" | null, "fal_request_id": "..." | null,
     "units": 5.0625 | null, "amount": 3.0375 | null}

``digest`` is an intent's (the body about to be submitted); ``fal_request_id`` a finished
job's fal job, so that fal's history never gives it to another request. ``units``: an intent's
or a submitted job's expected units, a finished job's cost in units (with its ``amount``, in
the price's currency), which is what spend per tenant is rebuilt from. All are optional and
written only when set: records written before they existed read as null.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec

from service.core.ledger import ENTRY_STATES, FalRef, LedgerEntry, Source
from service.messages import format_timestamp


def encode_entry(entry: LedgerEntry, writer: str) -> bytes:
    fal = entry.fal
    body: dict[str, Any] = {
        "v": 1,
        "state": entry.state,
        "writer": writer,
        "source": {
            "topic": entry.source.topic,
            "partition": entry.source.partition,
            "offset": entry.source.offset,
        },
        "at": format_timestamp(entry.at),
        "fal": None
        if fal is None
        else {
            "request_id": fal.request_id,
            "status_url": fal.status_url,
            "response_url": fal.response_url,
            "cancel_url": fal.cancel_url,
        },
        "received_at": format_timestamp(entry.received_at) if entry.received_at else None,
        "metadata": entry.metadata,
        "deadline": format_timestamp(entry.deadline) if entry.deadline else None,
        "status": entry.status,
        "shape": entry.shape,
        "run_s": entry.run_s,
        "tenant": entry.tenant,
    }
    # Only when set: every finished entry would otherwise carry two nulls.
    if entry.digest is not None:
        body["digest"] = entry.digest
    if entry.fal_request_id is not None:
        body["fal_request_id"] = entry.fal_request_id
    if entry.units is not None:
        body["units"] = entry.units
    if entry.amount is not None:
        body["amount"] = entry.amount
    return json.dumps(body, separators=(",", ":")).encode()


def decode_entry(key: str, value: bytes) -> tuple[LedgerEntry, str]:
    """The entry and its writer; raises ValueError (or KeyError/TypeError) on a bad record."""
    # msgspec's decoder: a quarter of json.loads's CPU on these records (2.4 µs against 10 µs
    # here), which is most of a replica's start on a large ledger.
    body = msgspec.json.decode(value)
    if not isinstance(body, dict):
        raise TypeError("a ledger record is a JSON object")
    src = body["source"]
    fal = body.get("fal")
    received = body.get("received_at")
    entry = LedgerEntry(
        key=key,
        state=body["state"],
        source=Source(str(src["topic"]), int(src["partition"]), int(src["offset"])),
        at=datetime.fromisoformat(body["at"]),
        fal=None
        if fal is None
        else FalRef(
            **{k: str(fal[k]) for k in ("request_id", "status_url", "response_url", "cancel_url")}
        ),
        received_at=datetime.fromisoformat(received) if received else None,
        metadata=body.get("metadata"),
        deadline=datetime.fromisoformat(body["deadline"]) if body.get("deadline") else None,
        status=body.get("status"),
        shape=body.get("shape"),
        run_s=float(body["run_s"]) if isinstance(body.get("run_s"), int | float) else None,
        tenant=str(body["tenant"]) if isinstance(body.get("tenant"), str) else None,
        digest=_opt_str(body.get("digest")),
        fal_request_id=_opt_str(body.get("fal_request_id")),
        units=_opt_float(body.get("units")),
        amount=_opt_float(body.get("amount")),
    )
    if entry.state not in ENTRY_STATES:
        raise ValueError(f"unknown ledger state {entry.state!r}")
    return entry, str(body.get("writer", ""))


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class _Source(msgspec.Struct):
    topic: str
    partition: int
    offset: int


class _End(msgspec.Struct):
    """What a ``LedgerView`` keeps of an ended entry (``service.core.ended``, plus its spend,
    run time and fal job); msgspec skips the other fields without building them."""

    state: str
    source: _Source
    at: str
    tenant: str | None = None
    units: float | None = None
    amount: float | None = None
    fal_request_id: str | None = None
    shape: str | None = None
    run_s: float | None = None


_END = msgspec.json.Decoder(_End)


def decode_end(key: str, value: bytes) -> LedgerEntry | None:
    """An ended entry (finished, rejected) with only what the relay's view keeps of it, at
    about a third of ``decode_entry``'s cost; None for any other record (an open entry, or
    one whose fields are not of the usual types: ``decode_entry`` reads it tolerantly)."""
    try:
        end = _END.decode(value)
    except msgspec.ValidationError:
        return None
    if end.state not in ("finished", "rejected"):
        return None
    src = end.source
    return LedgerEntry(
        key=key,
        state=end.state,  # type: ignore[arg-type]  # (checked above)
        source=Source(src.topic, src.partition, src.offset),
        at=datetime.fromisoformat(end.at),
        tenant=end.tenant,
        units=end.units,
        amount=end.amount,
        fal_request_id=end.fal_request_id,
        shape=end.shape,
        run_s=end.run_s,
    )
