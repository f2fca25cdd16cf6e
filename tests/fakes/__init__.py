"""Plain fakes of the relay's ports (Kafka inbox/outbox, fal, clock) for unit tests.

They keep state that tests assert on (what was published, committed, submitted, the peak
number of jobs in flight); none of them records calls for their own sake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from service.core.offsets import Partition
from service.errors import FalJobFailed
from service.messages import ResultEvent
from service.ports import FalJobHandle, FalOutput, FalPhase, FalStatus, InboundRecord


class FakeClock:
    """Time moves only when the relay sleeps; sleeping yields to the event loop."""

    def __init__(self) -> None:
        self.elapsed = 0.0

    def now(self) -> datetime:
        return datetime(2026, 11, 24, tzinfo=UTC) + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    async def sleep(self, seconds: float) -> None:
        self.elapsed += seconds
        await asyncio.sleep(0)


class FakeInbox:
    """Partitions as lists; a cursor per partition; pause, rewind and commit like Kafka."""

    def __init__(self, topic: str = "requests", partitions: int = 3) -> None:
        self.topic = topic
        self.logs: dict[int, list[InboundRecord]] = {p: [] for p in range(partitions)}
        self.cursor = dict.fromkeys(self.logs, 0)
        self.paused: set[int] = set()
        self.committed: dict[int, int] = {}
        self.fetches = 0

    def append(self, partition: int, value: bytes | None, key: bytes | None = None) -> None:
        log = self.logs[partition]
        log.append(InboundRecord(self.topic, partition, len(log), key, value))

    async def fetch(self, max_records: int, max_wait: float) -> list[InboundRecord]:
        self.fetches += 1
        out: list[InboundRecord] = []
        for p, log in self.logs.items():
            if p in self.paused:
                continue
            while self.cursor[p] < len(log) and len(out) < max_records:
                out.append(log[self.cursor[p]])
                self.cursor[p] += 1
        await asyncio.sleep(0 if out else 0.001)  # pacing of an idle fake, not synchronisation
        return out

    def pause(self) -> None:
        self.paused = set(self.logs)

    def resume(self) -> None:
        self.paused = set()

    def rewind(self, record: InboundRecord) -> None:
        self.cursor[record.partition] = record.offset

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        for part, offset in offsets.items():
            assert offset >= self.committed.get(part.partition, 0), "commit went back"
            self.committed[part.partition] = offset


@dataclass
class FakeOutbox:
    results: list[ResultEvent] = field(default_factory=list)
    dead_letters: list[tuple[InboundRecord, str, str]] = field(default_factory=list)
    failures_to_inject: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish_result(self, event: ResultEvent) -> None:
        if self.failures_to_inject > 0:
            self.failures_to_inject -= 1
            raise ConnectionError("broker unavailable")
        self.results.append(event)
        self.changed.set()

    async def dead_letter(self, record: InboundRecord, code: str, message: str) -> None:
        self.dead_letters.append((record, code, message))
        self.changed.set()

    async def wait_for(self, results: int, dead_letters: int = 0) -> None:
        async with asyncio.timeout(10):
            while len(self.results) < results or len(self.dead_letters) < dead_letters:
                self.changed.clear()
                await self.changed.wait()


class FakeFal:
    """Each job completes after ``polls`` status calls (the prompt can say ``polls=N``); a
    prompt containing ``fail`` ends in a failed result; ``hold`` keeps it running."""

    def __init__(self) -> None:
        self.submitted: list[Mapping[str, Any]] = []
        self.polls: dict[str, int] = {}
        self.plan: dict[str, str] = {}
        self.in_flight = 0
        self.peak_in_flight = 0
        self.cancelled: list[str] = []
        self._changed = asyncio.Event()

    async def wait_submitted(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.submitted) < count:
                self._changed.clear()
                await self._changed.wait()

    async def submit(self, arguments: Mapping[str, Any]) -> FalJobHandle:
        await asyncio.sleep(0)
        fid = f"fal-{len(self.submitted)}"
        self.submitted.append(arguments)
        self._changed.set()
        self.polls[fid] = 0
        self.plan[fid] = str(arguments.get("prompt", ""))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return FalJobHandle(fid, f"s/{fid}", f"r/{fid}", f"c/{fid}")

    async def status(self, job: FalJobHandle) -> FalStatus:
        await asyncio.sleep(0)
        self.polls[job.request_id] += 1
        prompt = self.plan[job.request_id]
        needed = int(prompt.split("polls=")[1].split()[0]) if "polls=" in prompt else 1
        if "hold" in prompt or self.polls[job.request_id] < needed:
            return FalStatus(FalPhase.RUNNING)
        return FalStatus(FalPhase.COMPLETED, inference_time=0.5)

    async def result(self, job: FalJobHandle) -> FalOutput:
        await asyncio.sleep(0)
        self.in_flight -= 1
        if "fail" in self.plan[job.request_id]:
            raise FalJobFailed("the model crashed", details={"status_code": 500})
        return FalOutput(video={"url": f"https://v/{job.request_id}.mp4"}, seed=42)

    async def cancel(self, job: FalJobHandle) -> None:
        self.in_flight -= 1
        self.cancelled.append(job.request_id)
