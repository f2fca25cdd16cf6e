"""What one fal HTTP call costs the relay's process, per transport: ``aiohttp`` vs ``httpx``.

The relay's CPU per job is almost all HTTP (see the perf notes), and ``RELAY_FAL_HTTP_TRANSPORT``
chooses what sits under the httpx API. This script decides the default by measurement:

- the fal queue emulator runs as a separate process on a free loopback port, so its CPU is not
  counted against the client (its own CPU per call is shown, to tell when it was the bottleneck);
- for each transport the client is built exactly as production builds it
  (``service.app.fal_http_client`` from ``service.config.load_settings``) and wrapped in
  ``FalQueue``; one job is submitted, then N ``FalQueue.status()`` calls (GET, JSON parsing, our
  error handling and metrics) run at concurrency 1 and 32, asyncio tasks sharing the client;
- a whole job's HTTP: submit + status + result for 500 jobs at concurrency 32;
- each cell gets a fresh client and a warm-up first (which opens the connections: at concurrency
  32 the pool holds 32, as in a relay with ``RELAY_MAX_IN_FLIGHT=32``); process CPU time
  (``time.process_time()``, user + system, all threads) and wall time are taken around the
  measured calls only; repetitions alternate the transport order; the median with min-max is
  reported;
- afterwards the emulator's call counters must equal the calls made, so no retry hid in a number.

Run (from the project root)::

    uv run python bench/http_transport.py           # ~2,000 calls a cell, 3 repetitions
    uv run python bench/http_transport.py --quick   # 50 calls, 1 repetition: a smoke run

The full run writes ``bench/results/http-transport.md``; ``--quick`` writes only with ``--output``.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from harness import (
    ROOT,
    Emulator,
    bench_arguments,
    drop_proxies,
    emulator_process,
    header_lines,
    write_output,
)

from service.adapters.fal import FalQueue
from service.app import fal_http_client
from service.config import load_settings
from service.core.ledger import FalRef
from service.metrics import RelayMetrics
from service.ports import FalPhase

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "http-transport.md"
TRANSPORTS = ("aiohttp", "httpx")
CONCURRENCIES = (1, 32)
JOB_CONCURRENCY = 32
# The relay runs one HTTP call at a time per job, so 32 concurrent calls is RELAY_MAX_IN_FLIGHT=32;
# fal_http_client sizes the connection pool from it (here: 32 connections, none waiting).
MAX_IN_FLIGHT = max(*CONCURRENCIES, JOB_CONCURRENCY)
ENDPOINT = "fal-ai/lynx"
# A valid Lynx input (the emulator validates it as the app would) that succeeds at once.
ARGUMENTS: dict[str, Any] = {
    "image_url": "https://images.example.com/subject.png",
    "prompt": "a person waving at the camera",
    "num_frames": 33,
    "frames_per_second": 16,
    "seed": 11,
}
PACKAGES = ("httpx", "httpx-aiohttp", "aiohttp", "httpcore", "sniffio")
# With --run-time 0 a job is COMPLETED by its first status call; more polls mean something broke.
MAX_POLLS_PER_JOB = 20
SERVER_CPU_MIN_S = 0.2


@dataclass(frozen=True, slots=True)
class Plan:
    calls: int  # measured status calls per cell
    warmup_calls: int
    jobs: int  # measured whole jobs per repetition
    warmup_jobs: int
    repetitions: int


FULL = Plan(calls=2000, warmup_calls=200, jobs=500, warmup_jobs=64, repetitions=3)
# Even the quick warm-up opens all 32 connections: httpcore's cost per call grows with the pool.
QUICK = Plan(calls=50, warmup_calls=32, jobs=32, warmup_jobs=32, repetitions=1)


@dataclass(frozen=True, slots=True)
class Sample:
    cpu_s: float
    wall_s: float
    server_cpu_s: float | None
    units: int  # calls or jobs
    calls: int  # HTTP calls made in the measured window


@dataclass(slots=True)
class Counter:
    """HTTP calls this process made, by kind, to compare with the emulator's own counters."""

    calls: dict[str, int] = field(default_factory=lambda: {"submit": 0, "status": 0, "result": 0})

    @property
    def total(self) -> int:
        return sum(self.calls.values())


# --- the measured work --------------------------------------------------------------------------


def _split(total: int, workers: int) -> list[int]:
    return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]


async def _status_calls(fal: FalQueue, job: FalRef, count: int, counter: Counter) -> None:
    for _ in range(count):
        status = await fal.status(job)
        counter.calls["status"] += 1
        if status.phase is not FalPhase.COMPLETED:
            raise RuntimeError(f"status {status.phase} for a job with --run-time 0")


async def _whole_jobs(fal: FalQueue, count: int, counter: Counter) -> None:
    for _ in range(count):
        job = await fal.submit(ARGUMENTS)
        counter.calls["submit"] += 1
        for _poll in range(MAX_POLLS_PER_JOB):
            status = await fal.status(job)
            counter.calls["status"] += 1
            if status.phase is FalPhase.COMPLETED:
                break
        else:
            raise RuntimeError(f"job not COMPLETED after {MAX_POLLS_PER_JOB} polls")
        await fal.result(job)  # raises FalJobFailed unless there is a video url
        counter.calls["result"] += 1


Work = Callable[[int], Coroutine[Any, Any, None]]


async def _concurrently(work: Work, total: int, workers: int) -> None:
    async with asyncio.TaskGroup() as group:
        for share in _split(total, workers):
            group.create_task(work(share))


async def _measure(
    emulator: Emulator, counter: Counter, work: Work, total: int, workers: int
) -> Sample:
    gc.collect()
    calls_before = counter.total
    server_before = emulator.server_cpu_s()
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    await _concurrently(work, total, workers)
    cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
    server_after = emulator.server_cpu_s()
    server = None if server_before is None or server_after is None else server_after - server_before
    return Sample(cpu, wall, server, total, counter.total - calls_before)


def _fal(http: httpx.AsyncClient, base_url: str) -> FalQueue:
    return FalQueue(http, base_url=base_url, endpoint=ENDPOINT, metrics=RelayMetrics())


def _settings_env(base_url: str, transport: str) -> dict[str, str]:
    return {
        "FAL_QUEUE_URL": base_url,
        "RELAY_FAL_HTTP_TRANSPORT": transport,
        "RELAY_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
    }


async def status_cell(
    emulator: Emulator, counter: Counter, transport: str, workers: int, plan: Plan
) -> Sample:
    settings = load_settings(_settings_env(emulator.base_url, transport))
    async with fal_http_client(settings) as http:
        fal = _fal(http, settings.fal_queue_url)
        job = await fal.submit(ARGUMENTS)
        counter.calls["submit"] += 1

        async def work(count: int) -> None:
            await _status_calls(fal, job, count, counter)

        await _concurrently(work, plan.warmup_calls, workers)
        return await _measure(emulator, counter, work, plan.calls, workers)


async def job_cell(emulator: Emulator, counter: Counter, transport: str, plan: Plan) -> Sample:
    settings = load_settings(_settings_env(emulator.base_url, transport))
    async with fal_http_client(settings) as http:
        fal = _fal(http, settings.fal_queue_url)

        async def work(count: int) -> None:
            await _whole_jobs(fal, count, counter)

        await _concurrently(work, plan.warmup_jobs, JOB_CONCURRENCY)
        return await _measure(emulator, counter, work, plan.jobs, JOB_CONCURRENCY)


Results = dict[tuple[str, str], list[Sample]]  # (transport, cell) -> one sample a repetition


async def run_all(emulator: Emulator, counter: Counter, plan: Plan) -> Results:
    results: Results = {}
    for rep in range(plan.repetitions):
        # Alternate the order so that drift in the machine's speed does not favour one transport.
        order = TRANSPORTS if rep % 2 == 0 else TRANSPORTS[::-1]
        for transport in order:
            for workers in CONCURRENCIES:
                sample = await status_cell(emulator, counter, transport, workers, plan)
                results.setdefault((transport, f"status c={workers}"), []).append(sample)
            sample = await job_cell(emulator, counter, transport, plan)
            results.setdefault((transport, "job"), []).append(sample)
            print(f"  repetition {rep + 1}/{plan.repetitions}: {transport} done", file=sys.stderr)
    return results


# --- the report ---------------------------------------------------------------------------------


def _ms(values: Sequence[float]) -> str:
    med = statistics.median(values) * 1000
    if len(values) == 1:
        return f"{med:.3f}"
    return f"{med:.3f} ({min(values) * 1000:.3f}-{max(values) * 1000:.3f})"


def _median_ms(samples: Sequence[Sample], what: Callable[[Sample], float]) -> float:
    return statistics.median(what(s) / s.units for s in samples) * 1000


def _server(samples: Sequence[Sample]) -> str:
    # /proc counts CPU in clock ticks (10 ms): below a few dozen ticks the number says nothing.
    values = [s.server_cpu_s for s in samples if s.server_cpu_s is not None]
    if not values or statistics.median(values) < SERVER_CPU_MIN_S:
        return "n/a"
    per_unit = [s.server_cpu_s / s.units for s in samples if s.server_cpu_s is not None]
    return f"{statistics.median(per_unit) * 1000:.3f}"


def _versions() -> str:
    parts = []
    for name in PACKAGES:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def report(results: Results, plan: Plan, quick: bool) -> str:
    stat_cells = [f"status c={c}" for c in CONCURRENCIES]
    lines = [
        "# HTTP transport benchmark: cost of one fal call in the relay's process",
        "",
        *header_lines(),
        f"- packages: {_versions()}",
        f"- run: {'--quick, ' if quick else ''}{plan.calls} status calls a cell after "
        f"{plan.warmup_calls} warm-up; {plan.jobs} jobs (submit + status + result) at "
        f"concurrency {JOB_CONCURRENCY} after {plan.warmup_jobs} warm-up; "
        f"{plan.repetitions} repetition(s); RELAY_MAX_IN_FLIGHT={MAX_IN_FLIGHT}",
        "- CPU is this process's user + system time (`time.process_time()`); the emulator runs in "
        "another process, its CPU is shown apart. Median (min-max) over the repetitions.",
        "",
        "## One `FalQueue.status()` call",
        "",
        "| transport | concurrency | CPU ms / call | wall ms / call | calls/s "
        "| emulator CPU ms / call |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cell, workers in zip(stat_cells, CONCURRENCIES, strict=True):
        for transport in TRANSPORTS:
            samples = results[(transport, cell)]
            rate = statistics.median(s.units / s.wall_s for s in samples)
            lines.append(
                f"| {transport} | {workers} "
                f"| {_ms([s.cpu_s / s.units for s in samples])} "
                f"| {_ms([s.wall_s / s.units for s in samples])} "
                f"| {rate:,.0f} | {_server(samples)} |"
            )
    lines += [
        "",
        f"## A whole job: submit + status + result, concurrency {JOB_CONCURRENCY}",
        "",
        "| transport | jobs | HTTP calls / job | CPU ms / job | wall ms / job | "
        "emulator CPU ms / job |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for transport in TRANSPORTS:
        samples = results[(transport, "job")]
        lines.append(
            f"| {transport} | {plan.jobs} "
            f"| {statistics.median(s.calls / s.units for s in samples):.2f} "
            f"| {_ms([s.cpu_s / s.units for s in samples])} "
            f"| {_ms([s.wall_s / s.units for s in samples])} "
            f"| {_server(samples)} |"
        )
    lines += ["", "## Ratio of CPU, httpx / aiohttp (medians)", ""]
    for cell in [*stat_cells, "job"]:
        aio = _median_ms(results[("aiohttp", cell)], lambda s: s.cpu_s)
        native = _median_ms(results[("httpx", cell)], lambda s: s.cpu_s)
        lines.append(f"- {cell}: {native / aio:.2f}x")
    return "\n".join(lines) + "\n"


def check_counts(emulator: Emulator, counter: Counter) -> None:
    """Every call the emulator saw was one we made and counted: no retries, no lost calls."""
    calls = emulator.stats()["calls"]
    for kind, made in counter.calls.items():
        seen = calls[kind]["total"]
        ok = calls[kind].get("200", 0)
        if seen != made or ok != made:
            raise RuntimeError(
                f"{kind}: made {made} calls, emulator saw {seen} ({ok} answered 200)"
            )


def main(argv: Sequence[str] | None = None) -> int:
    quick, output = bench_arguments(
        __doc__, "50 calls, 1 repetition (smoke run)", DEFAULT_OUTPUT, argv
    )
    plan = QUICK if quick else FULL
    # Loopback only: a proxy from the environment would change the transport httpx mounts.
    drop_proxies()

    counter = Counter()
    with emulator_process(["--run-time", "0"]) as emulator:
        results = asyncio.run(run_all(emulator, counter, plan))
        check_counts(emulator, counter)
    write_output(report(results, plan, quick), output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
