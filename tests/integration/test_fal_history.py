"""The request history seam against the fal emulator's Platform API: jobs submitted through the
queue seam are found again with their inputs, in both of the emulator's history modes, and so is
a job whose submit answer was lost.

No Kafka. Jobs run 0.01-0.03 s and are awaited through the queue seam's status stream (which
ends after COMPLETED), or held running with ``[emulator:run=30]`` until cancelled; nothing waits
on a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fal_emulator import EmulatorConfig, FalEmulator, Faults
from fal_emulator.config import HistoryLists
from service.adapters.fal import FalQueue
from service.adapters.fal_history import FalRequestHistory
from service.core.ledger import FalRef
from service.errors import FalHistoryRefused, FalUnauthorized, FalUnavailable
from service.metrics import RelayMetrics
from service.ports import FalHistoryItem
from tests.integration.conftest import emulator_running

KEY = "history-key-id:history-key-secret"
ENDPOINT = "fal-ai/lynx"
HOLD = "[emulator:run=30]"  # keeps a job running until it is cancelled or the server stops
DEADLINE = 10.0


def lynx_input(prompt: str) -> dict[str, Any]:
    return {"image_url": "https://images.example.com/subject.png", "prompt": prompt}


@dataclass
class Fal:
    """A running emulator with the two seams over it, sharing one client and key."""

    emulator: FalEmulator
    http: httpx.AsyncClient
    queue: FalQueue
    metrics: RelayMetrics

    def history(self, **options: Any) -> FalRequestHistory:
        return FalRequestHistory(
            self.http,
            api_url=self.emulator.api_url,
            endpoint=ENDPOINT,
            metrics=self.metrics,
            **options,
        )

    async def finished(self, job: FalRef) -> None:
        """Return once fal's status stream for ``job`` ended (it ends after COMPLETED)."""
        async with asyncio.timeout(DEADLINE):
            async for _ in self.queue.stream(job):
                pass

    def ref(self, request_id: str) -> FalRef:
        """The queue's URLs of a job the test knows only from the emulator (its oracle)."""
        base = f"{self.emulator.base_url}/{ENDPOINT}/requests/{request_id}"
        return FalRef(request_id, f"{base}/status", base, f"{base}/cancel")


@asynccontextmanager
async def fal_running(
    lists: HistoryLists = "all", transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[Fal]:
    config = EmulatorConfig(run_time=(0.01, 0.03), fal_key=KEY, history_lists=lists)
    async with (
        emulator_running(config) as emulator,
        httpx.AsyncClient(
            transport=transport, headers={"Authorization": f"Key {KEY}"}, timeout=DEADLINE
        ) as http,
    ):
        metrics = RelayMetrics()
        queue = FalQueue(http, base_url=emulator.base_url, endpoint=ENDPOINT, metrics=metrics)
        yield Fal(emulator, http, queue, metrics)


def window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(minutes=1), now + timedelta(minutes=1)


def by_id(items: list[FalHistoryItem]) -> dict[str, FalHistoryItem]:
    found = {item.request_id: item for item in items}
    assert len(found) == len(items), "a request listed twice"
    return found


@pytest.mark.parametrize("lists", ["all", "ended"])
async def test_submitted_jobs_are_listed_with_their_inputs(lists: HistoryLists) -> None:
    """Ended jobs are listed with input, output and status code in both modes; a running one
    is listed while it runs (ended_at null) with ``all``, only once it ended with ``ended``."""
    async with fal_running(lists) as fal:
        inputs = [lynx_input(f"a person waves, take {n}") for n in range(3)]
        jobs = [await fal.queue.submit(arguments) for arguments in inputs]
        held_input = lynx_input(f"a person waits {HOLD}")
        held = await fal.queue.submit(held_input)
        for job in jobs:
            await fal.finished(job)
        since, until = window()

        listed = by_id(await fal.history().requests(since, until))
        for job, arguments in zip(jobs, inputs, strict=True):
            item = listed[job.request_id]
            assert (item.json_input, item.status_code) == (arguments, 200)
            assert item.json_output is not None
            assert item.json_output["video"]["url"].startswith(fal.emulator.base_url)
            assert item.sent_at is not None
            assert item.ended_at is not None
            assert since <= item.sent_at <= item.ended_at < until
        if lists == "all":
            running = listed[held.request_id]
            assert (running.json_input, running.ended_at, running.status_code) == (
                held_input,
                None,
                None,
            )
        else:
            assert held.request_id not in listed
        assert len(listed) == (4 if lists == "all" else 3)

        await fal.queue.cancel(held)
        await fal.finished(held)
        cancelled = by_id(await fal.history().requests(since, until))[held.request_id]
        assert (cancelled.json_input, cancelled.status_code) == (held_input, 499)
        assert cancelled.ended_at is not None


async def test_the_window_selects_by_submit_time() -> None:
    async with fal_running() as fal:
        job = await fal.queue.submit(lynx_input("a person waves"))
        await fal.finished(job)
        since, until = window()
        assert await fal.history().requests(until, until + timedelta(minutes=1)) == []
        assert await fal.history().requests(since - timedelta(hours=1), since) == []
        (item,) = await fal.history().requests(since, until)
        assert item.request_id == job.request_id


@pytest.mark.parametrize("lists", ["all", "ended"])
@pytest.mark.parametrize("kind", ["lost-answer", "lost-answer-502"])
async def test_a_job_whose_submit_answer_was_lost_is_found_by_its_input(
    kind: str, lists: HistoryLists
) -> None:
    """The queue seam sees an error and no request id; the job was created all the same, and
    the history lists it with the input we sent (once it ended, in the ended mode)."""
    async with fal_running(lists) as fal:
        others = [await fal.queue.submit(lynx_input(f"someone else {n}")) for n in range(2)]
        lost_input = lynx_input("order 42: a person carves a pumpkin")
        since = datetime.now(UTC) - timedelta(minutes=1)
        fal.emulator.reconfigure(faults=Faults.parse(f"submit=1:{kind}"))
        with pytest.raises(FalUnavailable):
            await fal.queue.submit(lost_input)
        fal.emulator.reconfigure(faults=None)
        stats = fal.emulator.stats(include_jobs=True)
        assert stats["submits_created_then_lost"] == 1
        (lost_id,) = [
            job["request_id"] for job in stats["jobs"] if job["input"] == lost_input
        ]  # the emulator's own view: the oracle, not what the client knows
        if lists == "ended":
            await fal.finished(fal.ref(lost_id))
        for job in others:
            await fal.finished(job)

        listed = await fal.history().requests(since, datetime.now(UTC) + timedelta(minutes=1))
        found = [item for item in listed if item.json_input == lost_input]
        assert [item.request_id for item in found] == [lost_id]
        assert {job.request_id for job in others} <= set(by_id(listed))


class CancelAfterFirstPage(httpx.AsyncBaseTransport):
    """A real transport that, once the first history page is answered, runs ``between``: a
    job ending between two pages of one pass, at a chosen moment and without a sleep."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.between: Callable[[], Awaitable[None]] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        between, is_first_page = self.between, "cursor" not in request.url.params
        if between is not None and request.url.path.endswith("/by-endpoint") and is_first_page:
            self.between = None
            await response.aread()
            await between()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_job_ending_mid_pass_repeats_no_request_and_the_next_pass_finds_it() -> None:
    """Pages of two; a running job ends between page 1 and 2, so it moves ahead (onto page 1,
    already read) and pushes the others back: page 2 repeats one of page 1. The pass lists
    every ended job once; the next pass finds the job that ended."""
    transport = CancelAfterFirstPage()
    async with fal_running("all", transport) as fal:
        jobs = [await fal.queue.submit(lynx_input(f"take {n}")) for n in range(4)]
        for job in jobs:
            await fal.finished(job)
        held = await fal.queue.submit(lynx_input(f"held {HOLD}"))
        since, until = window()

        async def cancel_held() -> None:
            await fal.queue.cancel(held)
            await fal.finished(held)

        transport.between = cancel_held
        history = fal.history(page_size=2)
        first_pass = by_id(await history.requests(since, until))
        assert transport.between is None, "the job did not end mid-pass"
        assert {job.request_id for job in jobs} <= set(first_pass)
        second_pass = by_id(await history.requests(since, until))
        assert set(second_pass) == {job.request_id for job in [*jobs, held]}
        assert second_pass[held.request_id].status_code == 499
        pages = fal.emulator.stats()["calls"]["history"]
        assert pages["200"] == pages["total"] == 6  # 3 pages a pass: the repeat took a place


async def test_refusals_become_our_errors() -> None:
    """An endpoint the history does not know is a refusal (go on without it); a wrong key is
    unauthorized; neither is retried."""
    async with fal_running() as fal:
        since, until = window()
        unknown = FalRequestHistory(
            fal.http, api_url=fal.emulator.api_url, endpoint="fal-ai/flux", metrics=fal.metrics
        )
        with pytest.raises(FalHistoryRefused) as refused:
            await unknown.requests(since, until)
        assert refused.value.status_code == 404
        fal.emulator.reconfigure(fal_key="rotated-key")
        with pytest.raises(FalUnauthorized):
            await fal.history().requests(since, until)
        assert fal.emulator.stats()["calls"]["history"] == {"total": 2, "404": 1, "401": 1}
