"""The interfaces the relay works through, one per external system, named for our need.

``Inbox`` (requests in, offsets out) and ``Outbox`` (results and dead letters out) are Kafka
in production (``service.adapters.kafka``); ``LedgerFeed`` keeps the ledger view
(``service.adapters.ledger``); ``VideoJobs`` is fal's queue (``service.adapters.fal``);
``FalHistory`` is fal's record of the requests it received (``service.adapters.fal_history``);
``Clock`` is time, every wait included. Tests substitute plain fakes.

A job at fal is named by ``FalRef`` (``service.core.ledger``): the ids and URLs fal gave at
submit, which is also what the ledger keeps of it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from service.core.cost import Price
from service.core.ledger import FalRef, LedgerEntry
from service.core.offsets import Partition
from service.messages import ProgressEvent, ResultEvent


@dataclass(frozen=True, slots=True)
class InboundRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def part(self) -> Partition:
        return Partition(self.topic, self.partition)


class AssignmentListener(Protocol):
    async def partitions_revoked(self, parts: set[Partition]) -> None: ...
    async def partitions_assigned(self, parts: set[Partition]) -> None: ...


class Inbox(Protocol):
    async def fetch(self, max_records: int, max_wait: float) -> list[InboundRecord]:
        """Records in offset order per partition; an empty list after ``max_wait`` seconds."""

    def pause_only(self, parts: set[Partition] | None) -> None:
        """Pause exactly ``parts`` of the assigned partitions (all of them when None) and
        resume the others; fetch keeps the consumer in its group either way."""

    def rewind(self, record: InboundRecord) -> None:
        """Deliver ``record`` (and what follows it in its partition) again on a later fetch."""

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit the next offset to read per partition; raises on failure."""

    async def read(self, part: Partition, offset: int) -> InboundRecord | None:
        """The record at ``offset`` again (a waiting request whose body was not kept); None
        when the log no longer has it. Raises when Kafka cannot answer now."""

    def partition_count(self) -> int | None:
        """How many partitions the requests topic has (None while not known yet)."""


class Outbox(Protocol):
    """Everything the relay writes to Kafka. Each method returns once the broker acknowledged
    the write (acks=all) and raises otherwise; the writes of one call land atomically (a Kafka
    transaction), so a crash can never leave a result without its ledger entry."""

    async def record_job(self, entry: LedgerEntry) -> None:
        """A job's ledger entry on its way to fal: its ``intent`` before the submit, its
        ``submitted`` entry once fal has it."""

    async def finish(self, event: ResultEvent, entry: LedgerEntry) -> None:
        """The result event and the job's ``finished`` ledger entry."""

    async def reject(
        self,
        record: InboundRecord,
        code: str,
        message: str,
        event: ResultEvent | None,
        entry: LedgerEntry,
    ) -> None:
        """The dead-letter copy of ``record`` (untouched, plus reason headers), the failed
        event when there is one, and the ``rejected`` ledger entry."""

    async def flush(self) -> None:
        """Return once every write asked for so far has landed or failed."""

    def progress(self, event: ProgressEvent) -> None:
        """Best effort, not awaited: a progress event rides along in the next transaction."""


class LedgerFeed(Protocol):
    """The owner of the ledger view: the one writer of ``LedgerView``, fed by the ledger
    topic and by the relay's own acknowledged writes."""

    async def catch_up(self) -> None:
        """Return once every ledger record written before the call is in the view."""

    async def take(self, sources: set[tuple[str, int]]) -> None:
        """Source partitions taken over: hold their ended entries (RELAY_LEDGER_SCOPE=owned)
        and catch up, as ``catch_up``."""

    def release(self, sources: set[tuple[str, int]]) -> None:
        """Source partitions handed back: their ended entries need not be held."""

    def written(self, entry: LedgerEntry) -> None:
        """An entry of ours that Kafka just acknowledged: in the view at once (reading it
        back later changes nothing)."""

    def expire(self, now: datetime) -> None:
        """Forget ended entries older than the dedupe retention."""


class FalPhase(enum.Enum):
    QUEUED = "IN_QUEUE"
    RUNNING = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


@dataclass(frozen=True, slots=True)
class FalLogLine:
    message: str
    level: str | None = None
    timestamp: str | None = None


@dataclass(frozen=True, slots=True)
class FalStatus:
    phase: FalPhase
    queue_position: int | None = None
    error: str | None = None
    error_type: str | None = None
    inference_time: float | None = None
    logs: tuple[FalLogLine, ...] = ()  # all of the job's lines so far, when asked for


@dataclass(frozen=True, slots=True)
class FalOutput:
    video: Mapping[str, Any]
    seed: int | None
    billable_units: float | None = None  # X-Fal-Billable-Units on fal's answer, if it said


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    """How fal should treat a job (from the request's ``options``)."""

    priority: str | None = None
    start_timeout_s: float | None = None
    runner_hint: str | None = None


class VideoJobs(Protocol):
    """fal's queue, for one endpoint. Methods raise ``service.errors.FalError`` subclasses."""

    async def submit(
        self, arguments: Mapping[str, Any], options: SubmitOptions | None = None
    ) -> FalRef:
        """Raises ``FalSubmitUnknown`` when the submit was sent and its answer lost (fal may
        have the job); any other error means no job was created."""

    def ref_for(self, fal_request_id: str) -> FalRef:
        """A job known only by its fal request id (from fal's request history)."""

    async def status(self, job: FalRef) -> FalStatus: ...
    def stream(self, job: FalRef) -> AsyncIterator[FalStatus]:
        """fal's status stream: statuses as they change, ending after COMPLETED."""

    async def result(self, job: FalRef) -> FalOutput: ...
    async def cancel(self, job: FalRef) -> None: ...


@dataclass(frozen=True, slots=True)
class FalHistoryItem:
    """One request fal has on record for the endpoint, as its request history lists it.

    Only ``request_id`` is sure to be there; anything fal left out or sent in a shape we do
    not read is None. ``sent_at`` None keeps the item all the same: its input may still be
    the one being looked for. ``ended_at`` None: not ended yet (or not said).
    ``json_input`` and ``json_output`` are fal's stored payloads (None once deleted).
    """

    request_id: str
    sent_at: datetime | None = None
    ended_at: datetime | None = None
    status_code: int | None = None
    json_input: Mapping[str, Any] | None = None
    json_output: Mapping[str, Any] | None = None


class FalHistory(Protocol):
    """fal's request history for one endpoint: what it received, including a submit whose
    answer never reached us. Methods raise ``service.errors.FalError`` subclasses; a
    ``FalHistoryRefused`` means the history cannot answer (go on without it)."""

    async def requests(self, since: datetime, until: datetime) -> list[FalHistoryItem]:
        """Every request sent in ``[since, until)`` (timezone-aware), each once, with its
        payloads. Whether a request not ended yet is listed is fal's choice: a caller must
        work either way."""


class FalPricing(Protocol):
    """The account's unit price for the endpoint (fal's Platform API). Raises
    ``service.errors.FalError`` subclasses; ``FalHistoryRefused``/``FalUnauthorized``: it will
    not say (keep the fallback price)."""

    async def price(self) -> Price: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC (for the timestamps of events)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals)."""

    async def sleep(self, seconds: float) -> None: ...

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[Any]:
        """Like ``asyncio.timeout``: the block is cancelled after ``seconds`` (None: never)
        and ``TimeoutError`` raised."""

    async def wait(
        self, tasks: Iterable[asyncio.Future[Any]], within: float | None
    ) -> set[asyncio.Future[Any]]:
        """Wait until ``tasks`` are done or ``within`` seconds passed (None: no limit); the
        ones still pending. The tasks are not cancelled."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What the output store says of an object it holds."""

    size: int
    etag: str | None = (
        None  # the store's entity tag, quotes removed (S3: an MD5 or a multipart one)
    )


class OutputStore(Protocol):
    """The user's object storage for videos (RELAY_OUTPUT_URL). Methods raise
    ``service.errors.StorageError`` (``retryable`` per cause)."""

    part_size: int  # the bytes of each part of a multipart upload (the last may be fewer)
    multipart: bool  # every upload is multipart, so no ETag is a single PUT's

    async def put(
        self, key: str, chunks: AsyncIterator[bytes], content_type: str | None
    ) -> StoredObject:
        """Stream ``chunks`` into the object ``key`` (written whole or not at all); never
        holds more than a few parts in memory."""

    async def head(self, key: str) -> StoredObject | None:
        """The object as stored, or None if there is none."""

    def url_for(self, key: str) -> str:
        """The object's URL (``s3://bucket/key`` and the like)."""

    async def presigned(self, key: str, ttl_s: int) -> str:
        """A URL anyone may GET the object with, for ``ttl_s`` seconds."""


class Download(Protocol):
    size: int | None  # the length the server announced, if it did
    content_type: str | None

    def chunks(self) -> AsyncIterator[bytes]: ...


class VideoFiles(Protocol):
    """fal's output files (its CDN). Raises ``service.errors.FalError`` subclasses:
    ``FalResultExpired`` once the file is gone, ``FalUnavailable`` for what may pass."""

    def download(self, url: str) -> AbstractAsyncContextManager[Download]: ...

    async def delete_payloads(self, fal_request_id: str) -> None:
        """Have fal delete the request's stored input and output files (its Platform API)."""
