"""Plain fakes of the relay's ports (Kafka inbox/outbox, fal, clock) for unit tests.

They keep state that tests assert on (what was published, committed, submitted, the peak
number of jobs in flight); none of them records calls for their own sake.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from service.core.cost import Price
from service.core.ledger import FalRef, LedgerEntry, LedgerView
from service.core.offsets import Partition
from service.errors import (
    FalHistoryRefused,
    FalJobFailed,
    FalRejected,
    FalResultExpired,
    FalSubmitUnknown,
    FalUnauthorized,
    FalUnavailable,
    StorageError,
)
from service.messages import ProgressEvent, ResultEvent
from service.ports import (
    FalHistoryItem,
    FalLogLine,
    FalOutput,
    FalPhase,
    FalStatus,
    InboundRecord,
    StoredObject,
    SubmitOptions,
)


class FakeClock:
    """Time moves only when the relay sleeps (or a test calls ``advance``); sleeping yields
    to the event loop. Timeouts and waits with a limit expire when time passes their end,
    so job timeouts, deadlines and grace periods run without real waiting."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._timers: list[tuple[float, asyncio.Timeout]] = []
        self.timer_armed = asyncio.Event()  # set whenever a timeout starts

    def now(self) -> datetime:
        return datetime(2026, 11, 24, tzinfo=UTC) + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: every timeout whose end has come expires."""
        self.elapsed += max(0.0, seconds)
        loop = asyncio.get_running_loop()
        for end, timer in list(self._timers):
            if end <= self.elapsed and not timer.expired():
                timer.reschedule(loop.time())  # asyncio's own expiry, at the next loop turn

    @asynccontextmanager
    async def timeout(self, seconds: float | None) -> AsyncIterator[None]:
        async with asyncio.timeout(None) as timer:
            if seconds is None:
                yield
                return
            entry = (self.elapsed + seconds, timer)
            self._timers.append(entry)
            self.timer_armed.set()
            if seconds <= 0:
                timer.reschedule(asyncio.get_running_loop().time())
            try:
                yield
            finally:
                self._timers.remove(entry)

    async def wait(
        self, tasks: Iterable[asyncio.Future[Any]], within: float | None
    ) -> set[asyncio.Future[Any]]:
        waiting = set(tasks)
        if waiting:
            with contextlib.suppress(TimeoutError):
                async with self.timeout(within):
                    await asyncio.wait(waiting)
        return {t for t in waiting if not t.done()}


class FakeInbox:
    """Partitions as lists; a cursor per partition; pause, rewind and commit like Kafka."""

    def __init__(self, topic: str = "requests", partitions: int = 3) -> None:
        self.topic = topic
        self.logs: dict[int, list[InboundRecord]] = {p: [] for p in range(partitions)}
        self.cursor = dict.fromkeys(self.logs, 0)
        self.paused: set[int] = set()
        self.committed: dict[int, int] = {}
        self.commit_violations: list[str] = []
        self.fetches = 0
        self.fetched = asyncio.Event()  # set at every fetch: the intake loop went round
        self.reads = 0  # records read again (bodies the backlog did not keep)
        self.reading = asyncio.Event()
        self.read_gate: asyncio.Event | None = None
        self.rewinds = 0
        self.rewound = asyncio.Event()
        self.drained = asyncio.Event()  # every record was handed out (and not rewound)
        self.assign_on_next_fetch: int | None = None
        # With a clock, an empty fetch takes its ``max_wait`` of (fake) time, as Kafka's does.
        self.clock: FakeClock | None = None

    def append(self, partition: int, value: bytes | None, key: bytes | None = None) -> None:
        log = self.logs.setdefault(partition, [])
        self.cursor.setdefault(partition, 0)
        log.append(InboundRecord(self.topic, partition, len(log), key, value))

    async def fetch(self, max_records: int, max_wait: float) -> list[InboundRecord]:
        self.fetches += 1
        self.fetched.set()
        if self.assign_on_next_fetch is not None:
            # A partition assigned during getmany starts unpaused, as in Kafka.
            self.logs.setdefault(self.assign_on_next_fetch, [])
            self.cursor.setdefault(self.assign_on_next_fetch, 0)
            self.paused.discard(self.assign_on_next_fetch)
            self.assign_on_next_fetch = None
        out: list[InboundRecord] = []
        for p, log in self.logs.items():
            if p in self.paused:
                continue
            while self.cursor[p] < len(log) and len(out) < max_records:
                out.append(log[self.cursor[p]])
                self.cursor[p] += 1
        if all(self.cursor[p] == len(log) for p, log in self.logs.items()):
            self.drained.set()
        if not out and self.clock is not None:
            self.clock.advance(max_wait)
        await asyncio.sleep(0 if out else 0.001)  # pacing of an idle fake, not synchronisation
        return out

    def pause_only(self, parts: set[Partition] | None) -> None:
        if parts is None:
            self.paused = set(self.logs)
        else:
            self.paused = {p.partition for p in parts if p.topic == self.topic}

    def rewind(self, record: InboundRecord) -> None:
        self.rewinds += 1
        self.rewound.set()
        self.drained.clear()
        self.cursor[record.partition] = record.offset

    async def read(self, part: Partition, offset: int) -> InboundRecord | None:
        self.reads += 1
        self.reading.set()
        if self.read_gate is not None:
            await self.read_gate.wait()  # a test holds the read here
        await asyncio.sleep(0)
        log = self.logs.get(part.partition, [])
        return log[offset] if offset < len(log) else None

    def partition_count(self) -> int | None:
        return len(self.logs)

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        for part, offset in offsets.items():
            if offset < self.committed.get(part.partition, 0):
                self.commit_violations.append(f"{part}: {offset} after {self.committed}")
            self.committed[part.partition] = offset


@dataclass
class FakeOutbox:
    """Kafka's writes: each call lands whole or not at all, like a transaction. The ledger
    records are kept in ``ledger`` (what a restarted relay would read back)."""

    results: list[ResultEvent] = field(default_factory=list)
    dead_letters: list[tuple[InboundRecord, str, str]] = field(default_factory=list)
    ledger: list[LedgerEntry] = field(default_factory=list)
    progress_events: list[ProgressEvent] = field(default_factory=list)
    failures_to_inject: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _maybe_fail(self) -> None:
        if self.failures_to_inject > 0:
            self.failures_to_inject -= 1
            raise ConnectionError("broker unavailable")

    async def record_job(self, entry: LedgerEntry) -> None:
        self._maybe_fail()
        self.ledger.append(entry)

    async def finish(self, event: ResultEvent, entry: LedgerEntry) -> None:
        self._maybe_fail()
        self.results.append(event)
        self.ledger.append(entry)
        self.changed.set()

    async def reject(
        self,
        record: InboundRecord,
        code: str,
        message: str,
        event: ResultEvent | None,
        entry: LedgerEntry,
    ) -> None:
        self._maybe_fail()
        self.dead_letters.append((record, code, message))
        if event is not None:
            self.results.append(event)
        self.ledger.append(entry)
        self.changed.set()

    async def flush(self) -> None:
        await asyncio.sleep(0)

    def progress(self, event: ProgressEvent) -> None:
        self.progress_events.append(event)

    async def wait_for(self, results: int, dead_letters: int = 0) -> None:
        async with asyncio.timeout(10):
            while len(self.results) < results or len(self.dead_letters) < dead_letters:
                self.changed.clear()
                await self.changed.wait()


class FakeLedgerFeed:
    """The ledger topic as a list: catching up applies what a previous process wrote, and
    takes a while (it yields ``slowness`` times first), as reading Kafka does."""

    def __init__(
        self, view: LedgerView, written: list[LedgerEntry] | None = None, slowness: int = 20
    ) -> None:
        self.view = view
        self.previous = written if written is not None else []  # a previous process's
        self.slowness = slowness
        self.catch_ups = 0

    async def catch_up(self) -> None:
        self.catch_ups += 1
        for _ in range(self.slowness):
            await asyncio.sleep(0)
        for entry in self.previous:
            self.view.apply(entry.key, entry)

    async def take(self, sources: set[tuple[str, int]]) -> None:
        self.view.hold(sources)
        await self.catch_up()
        for entry in self.previous:  # what the view skipped before it held them, again
            self.view.backfill(entry.key, entry)

    def release(self, sources: set[tuple[str, int]]) -> None:
        self.view.release(sources)

    def written(self, entry: LedgerEntry) -> None:
        self.view.apply(entry.key, entry)

    def expire(self, now: datetime) -> None:
        self.view.expire(now)


class FakeFal:
    """Each job completes after ``polls`` status calls (the prompt can say ``polls=N``); a
    prompt containing ``fail`` ends in a failed result; ``hold`` keeps it running;
    ``stuck-submit`` makes its submit wait for ever (fal never answers). ``lose_answers``
    submits lose their answer after the job is created; ``drop_submits`` lose it without
    creating one (both raise ``FalSubmitUnknown``). ``jobs`` is every job created, with the
    input it was sent, as fal's request history lists them (``now`` dates them)."""

    def __init__(self) -> None:
        self.submitted: list[Mapping[str, Any]] = []
        self.polls: dict[str, int] = {}
        self.plan: dict[str, str] = {}
        self.in_flight = 0
        self.peak_in_flight = 0
        self.cancelled: list[str] = []
        self.status_outages = 0
        self.streams = 0
        self.results_fetched = 0
        self.refuse_key = False
        self.key_refused = asyncio.Event()
        self.options: list[SubmitOptions | None] = []
        self.submits_started = 0
        self.lose_answers = 0
        self.drop_submits = 0
        self.jobs: list[FalHistoryItem] = []
        # X-Fal-Billable-Units per fal job (its seconds of video) when ``bills``; else none.
        self.bills = False
        self.billed: dict[str, float] = {}
        self.now: Any = None  # a clock's ``now``, to date the jobs
        self._changed = asyncio.Event()

    def already_running(self, fal_id: str, prompt: str = "") -> None:
        """A job a previous relay process submitted."""
        self.polls[fal_id] = 0
        self.plan[fal_id] = prompt
        self.in_flight += 1

    async def wait_submit_started(self, count: int) -> None:
        async with asyncio.timeout(10):
            while self.submits_started < count:
                self._changed.clear()
                await self._changed.wait()

    async def wait_submitted(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.submitted) < count:
                self._changed.clear()
                await self._changed.wait()

    async def submit(
        self, arguments: Mapping[str, Any], options: SubmitOptions | None = None
    ) -> FalRef:
        await asyncio.sleep(0)
        self.submits_started += 1
        self._changed.set()
        if "stuck-submit" in str(arguments.get("prompt", "")):
            await asyncio.Event().wait()  # fal never answers this one
        self._check_key()
        if self.drop_submits > 0:
            self.drop_submits -= 1
            raise FalSubmitUnknown("fal answered 502 to submit")
        fid = f"fal-{len(self.submitted)}"
        self.jobs.append(
            FalHistoryItem(fid, sent_at=self.now() if self.now else None, json_input=arguments)
        )
        self.submitted.append(arguments)
        if self.bills:
            self.billed[fid] = int(arguments.get("num_frames", 81)) / int(
                arguments.get("frames_per_second", 16)
            )
        self.options.append(options)
        self._changed.set()
        self.polls[fid] = 0
        self.plan[fid] = str(arguments.get("prompt", ""))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if self.lose_answers > 0:
            self.lose_answers -= 1
            raise FalSubmitUnknown("HTTP error talking to fal: RemoteProtocolError")
        return self.ref_for(fid)

    def ref_for(self, fal_request_id: str) -> FalRef:
        fid = fal_request_id
        return FalRef(fid, f"s/{fid}", f"r/{fid}", f"c/{fid}")

    def _check_key(self) -> None:
        if self.refuse_key:
            self.key_refused.set()
            raise FalUnauthorized("Invalid key", status_code=401)

    async def status(self, job: FalRef) -> FalStatus:
        await asyncio.sleep(0)
        self._check_key()
        if job.request_id in self.cancelled:
            return FalStatus(FalPhase.COMPLETED, error="cancelled", error_type="client_cancelled")
        if self.status_outages > 0:
            self.status_outages -= 1
            raise FalUnavailable("fal answered 503 five times")
        self.polls[job.request_id] += 1
        self._changed.set()
        prompt = self.plan[job.request_id]
        needed = int(prompt.split("polls=")[1].split()[0]) if "polls=" in prompt else 1
        polls = self.polls[job.request_id]
        if "chatty" in prompt and polls < needed:
            # Queued once, then running with a growing log, like fal with logs=1.
            if polls == 1:
                return FalStatus(FalPhase.QUEUED, queue_position=3)
            lines = tuple(FalLogLine(f"step {k}") for k in range(polls * 2))
            return FalStatus(FalPhase.RUNNING, logs=lines)
        if "hold" in prompt or polls < needed:
            return FalStatus(FalPhase.RUNNING)
        return FalStatus(FalPhase.COMPLETED, inference_time=0.5)

    async def stream(self, job: FalRef) -> AsyncIterator[FalStatus]:
        """The status stream: every status a poll would see, until completion; a prompt with
        ``drop-stream`` breaks every connection (the relay must fall back to polling);
        ``empty-stream`` ends every connection at once without an event."""
        if "drop-stream" in self.plan[job.request_id]:
            raise FalUnavailable("stream connection reset")
        self.streams += 1
        if "empty-stream" in self.plan[job.request_id]:
            return
        while True:
            status = await self.status(job)
            yield status
            if status.phase is FalPhase.COMPLETED:
                return

    async def result(self, job: FalRef) -> FalOutput:
        await asyncio.sleep(0)
        self.in_flight -= 1
        self.results_fetched += 1
        plan = self.plan[job.request_id]
        if "refused-billed" in plan:  # the model refused the input, and fal billed it
            raise FalRejected("num_frames: too many", status_code=422, billable_units=0.5)
        if "fail" in plan:
            raise FalJobFailed("the model crashed", details={"status_code": 500})
        return FalOutput(
            video={"url": f"https://v/{job.request_id}.mp4"},
            seed=42,
            billable_units=self.billed.get(job.request_id),
        )

    async def cancel(self, job: FalRef) -> None:
        self.in_flight -= 1
        self.cancelled.append(job.request_id)
        self._changed.set()

    async def wait_polled(self, fal_request_id: str, count: int = 1) -> None:
        async with asyncio.timeout(10):
            while self.polls.get(fal_request_id, 0) < count:
                self._changed.clear()
                await self._changed.wait()

    async def wait_cancelled(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.cancelled) < count:
                self._changed.clear()
                await self._changed.wait()


class FakeHistory:
    """fal's request history over a ``FakeFal``: every job it created (queued ones too, as
    with ``history_lists=all``). ``refuse`` answers as a 404 would; ``outages`` fail that many
    reads as a 503 would. ``reads`` counts the reads answered."""

    def __init__(self, fal: FakeFal) -> None:
        self._fal = fal
        self.refuse = False
        self.outages = 0
        self.reads = 0

    async def requests(self, since: datetime, until: datetime) -> list[FalHistoryItem]:
        await asyncio.sleep(0)
        if self.refuse:
            raise FalHistoryRefused("fal answered 404 to history", status_code=404)
        if self.outages > 0:
            self.outages -= 1
            raise FalUnavailable("fal answered 503 to history")
        self.reads += 1
        return [
            job for job in self._fal.jobs if job.sent_at is None or since <= job.sent_at < until
        ]


class FakePricing:
    """fal's pricing: ``unit_price`` (None: it refuses, as a 404 would); ``asked`` counts."""

    def __init__(self, unit_price: float | None) -> None:
        self.unit_price = unit_price
        self.asked = 0
        self.changed = asyncio.Event()

    async def price(self) -> Price:
        await asyncio.sleep(0)
        self.asked += 1
        self.changed.set()
        if self.unit_price is None:
            raise FalHistoryRefused("fal answered 404 to pricing", status_code=404)
        return Price(self.unit_price, from_fal=True)


def video_bytes(url: str, size: int) -> bytes:
    """The bytes ``FakeVideoFiles`` serves for ``url``: its own, so a mix-up shows."""
    pattern = f"<{url}>".encode()
    return (pattern * (size // len(pattern) + 1))[:size]


class FakeVideoFiles:
    """fal's CDN and payload deletes: ``size`` bytes per video, in ``chunk`` pieces.
    ``fail_downloads`` fail with FalUnavailable (then succeed); ``gone`` URLs are expired;
    ``short`` URLs announce more bytes than they send."""

    def __init__(self, size: int = 10_000, chunk: int = 1_000) -> None:
        self.size = size
        self.chunk = chunk
        self.fail_downloads = 0
        self.gone: set[str] = set()
        self.short: set[str] = set()
        self.downloads: list[str] = []
        self.deleted: list[str] = []
        self.events: list[tuple[str, str]] = []  # ("download"|"delete", id or url), in order

    @asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[Any]:
        await asyncio.sleep(0)
        self.downloads.append(url)
        self.events.append(("download", url))
        if url in self.gone:
            raise FalResultExpired(f"gone: {url}")
        if self.fail_downloads:
            self.fail_downloads -= 1
            raise FalUnavailable("CDN hiccup")
        body = video_bytes(url, self.size)
        sent = body[: len(body) // 2] if url in self.short else body
        chunk = self.chunk

        class _Download:
            size = len(body)
            content_type = "video/mp4"

            async def chunks(self) -> AsyncIterator[bytes]:
                for i in range(0, len(sent), chunk):
                    await asyncio.sleep(0)
                    yield sent[i : i + chunk]

        yield _Download()

    async def delete_payloads(self, fal_request_id: str) -> None:
        await asyncio.sleep(0)
        self.deleted.append(fal_request_id)
        self.events.append(("delete", fal_request_id))


class FakeOutputStore:
    """An in-memory bucket with S3's ETags (multipart: the MD5 of the ``part_size`` parts' MD5s
    and their count; with ``multipart=False`` one part is a single PUT, its ETag the MD5).
    ``fail_puts`` fail (retryable) then succeed; ``refuse`` makes every call a refusal;
    ``peak_held`` is the most bytes one put ever held at once (it buffers one part)."""

    def __init__(self, part_size: int = 4_096, multipart: bool = True) -> None:
        self.part_size = part_size
        self.multipart = multipart  # S3's multipart ETags always, or a single PUT's for one part
        self.objects: dict[str, bytes] = {}
        self.fail_puts = 0
        self.refuse = False
        self.peak_held = 0
        self.events: list[str] = []

    async def put(
        self, key: str, chunks: AsyncIterator[bytes], content_type: str | None
    ) -> StoredObject:
        if self.refuse:
            raise StorageError("put: PermissionDeniedError", retryable=False)
        parts: list[bytes] = []
        held = b""
        async for chunk in chunks:
            held += chunk
            self.peak_held = max(self.peak_held, len(held))
            while len(held) >= self.part_size:
                parts.append(held[: self.part_size])
                held = held[self.part_size :]
        if held or not parts:
            parts.append(held)
        if self.fail_puts:
            self.fail_puts -= 1
            raise StorageError("put: GenericError: connection refused")
        body = b"".join(parts)
        self.objects[key] = body
        self.events.append(key)
        if len(parts) == 1 and not self.multipart:
            etag = hashlib.md5(body).hexdigest()  # noqa: S324
        else:
            joined = b"".join(hashlib.md5(p).digest() for p in parts)  # noqa: S324
            etag = f"{hashlib.md5(joined).hexdigest()}-{len(parts)}"  # noqa: S324
        return StoredObject(size=-1, etag=etag)

    async def head(self, key: str) -> StoredObject | None:
        body = self.objects.get(key)
        return None if body is None else StoredObject(size=len(body))

    def url_for(self, key: str) -> str:
        return f"s3://bucket/{key}"

    async def presigned(self, key: str, ttl_s: int) -> str:
        return f"https://bucket.example/{key}?ttl={ttl_s}"
