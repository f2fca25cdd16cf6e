"""lynx-relay against what a careful user would write instead, side by side: the one command.

Starts a private single-node Kafka broker, then for each scenario, each run and each system a
fresh fal queue emulator (served over TLS by ``bench/tls_emulator.py``, from a throwaway
``trustme`` CA, because ``fal_client`` only speaks https; the relay talks to the same https
emulator) and fresh topics, and runs **lynx-relay** (``python -m service run``) and the
**baseline** (``bench/baseline.py``: aiokafka + ``fal_client.AsyncClient().subscribe`` under an
``asyncio.Semaphore(N)``, committing after each message) as processes on loopback. Requests
are published before the system starts (a backlog); results are read as they arrive by a
consumer in this process (``read_committed``), which timestamps them.

Scenarios (full sizes; ``--quick`` shrinks everything to a smoke run, ``--scale F`` multiplies
the request counts of 1, 2 and 5 and the in-flight targets of 4):

1. utilisation: N = 64, every job 2 s at fal, 2,000 requests: jobs/s (first submission at fal
   to last result read) and its ratio to Little's ceiling N / L;
2. overhead: instant jobs (``--run-time 0``), 20,000 requests, N = 256: jobs/s, CPU seconds per
   job (the system process's user + system time from ``/proc/<pid>/stat``, from "ready" to the
   last result), end-to-end latency p50 / p99 (submission at fal to the result read from Kafka);
   the relay polls every 0.1 s here, as fal_client does (``RELAY_POLL_MIN_INTERVAL_S=0.1``);
3. HTTP cost: calls per job after the submit (status, a status stream counting as one, result)
   and how late each result is (read from Kafka minus the job's completion at fal), for 10 s and
   60 s jobs, lynx-relay in each watch mode (poll, stream, webhook) beside the baseline, all at
   once with an emulator each; waves of 4 then 8 jobs (poll mode learns a shape's run time from
   the first); also the calls per job of scenarios 1 and 2;
4. memory: RSS with 1,000 and with 10,000 jobs in flight (jobs of an hour, N = the same), and the
   growth over the idle process per job in flight (a system that has not reached the target
   after 300 s, or added no job for 60 s, is measured where it stopped);
5. dead-letter path: 20,000 invalid requests (no ``image_url``): messages/s (first to last
   dead letter read) and CPU per message; lynx-relay only (the baseline has no dead-letter topic);
6. crash cost: 50 requests with 10 s jobs, N = 50; ``kill -9`` as soon as the emulator has seen
   50 submissions, restart, wait for 50 results; duplicates = submissions - distinct prompts (each
   request's prompt is unique) and their price at $0.60 per video-second (5.0625 s of video).

Each figure is the median (min-max) of ``--runs`` runs (default 3). Run (project root)::

    uv run python bench/run.py                 # everything, full sizes, 3 runs
    uv run python bench/run.py --quick         # smoke run (minutes); writes only with --output
    uv run python bench/run.py --scale 0.25 --runs 1 --only utilisation,crash

The full run writes ``bench/results/latest.md`` and ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import shlex
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import trustme
from aiokafka import AIOKafkaConsumer
from harness import (
    RESULTS,
    ROOT,
    Emulator,
    JsonLogProcess,
    RelayProcess,
    Topics,
    cell,
    clean_env,
    create_topics,
    date_text,
    emulator_process,
    epoch,
    free_port,
    git_commit,
    kafka_broker,
    machine_text,
    proc_cpu_s,
    proc_rss_bytes,
    publish,
    relay_env,
    seconds,
)

BENCH = ROOT / "bench"
SYSTEMS = ("lynx-relay", "baseline")
SCENARIOS = ("utilisation", "overhead", "http", "memory", "dead-letter", "crash")
REQUEST_PARTITIONS = 6
OTHER_PARTITIONS = 3
JOBS_TOPIC_PARTITIONS = 3
FAL_KEY = "bench-key"  # the emulator accepts any non-empty key
VIDEO_SECONDS = 81 / 16  # a default Lynx job: 81 frames at 16 fps
PRICE_PER_VIDEO_SECOND = 0.60
PUBLISH_S = 300.0
READY_S = 90.0
FILL_S = 300.0  # memory: how long the in-flight target may take to reach
FILL_STALL_S = 60.0  # memory: ... and how long it may go without one more job in flight
SUBMIT_S = 60.0  # crash: waiting for the submissions before the kill
STATS_TRIES = 5
HTTP_IN_FLIGHT = 16  # http: more than a wave, so a wave never waits for a slot
HTTP_SLACK_S = 120.0  # http: room for a cold poll schedule, a safety poll and a slow machine
HTTP_MODES = ("poll", "stream", "webhook")
# overhead: the relay polls on fal_client's 0.1 s too (its default waits 1 s before the first
# status call, which would bound instant jobs at N / 1 s: a schedule, not an overhead).
OVERHEAD_RELAY_SETTINGS = {"RELAY_POLL_MIN_INTERVAL_S": "0.1"}
CRASH_KILL_AFTER_S = 1.0  # crash: the kill comes this long after the last submission


@dataclass(frozen=True, slots=True)
class Plan:
    util_in_flight: int
    util_run_time: float
    util_requests: int
    overhead_in_flight: int
    overhead_requests: int
    memory_jobs: int
    memory_jobs_small: int
    dlq_messages: int
    crash_in_flight: int
    crash_run_time: float
    http_run_times: tuple[float, ...]
    http_waves: tuple[int, ...]
    runs: int

    def scaled(self, factor: float) -> Plan:
        def s(n: int) -> int:
            return max(1, round(n * factor))

        return replace(
            self,
            util_requests=s(self.util_requests),
            overhead_requests=s(self.overhead_requests),
            memory_jobs=s(self.memory_jobs),
            memory_jobs_small=s(self.memory_jobs_small),
            dlq_messages=s(self.dlq_messages),
        )


FULL = Plan(
    util_in_flight=64,
    util_run_time=2.0,
    util_requests=2000,
    overhead_in_flight=256,
    overhead_requests=20_000,
    memory_jobs=10_000,
    memory_jobs_small=1_000,
    dlq_messages=20_000,
    crash_in_flight=50,
    crash_run_time=10.0,
    http_run_times=(10.0, 60.0),
    http_waves=(4, 8),
    runs=3,
)
QUICK = Plan(
    util_in_flight=8,
    util_run_time=1.0,
    util_requests=32,
    overhead_in_flight=32,
    overhead_requests=200,
    memory_jobs=200,
    memory_jobs_small=50,
    dlq_messages=500,
    crash_in_flight=10,
    crash_run_time=5.0,
    http_run_times=(2.0,),
    http_waves=(2, 2),
    runs=1,
)

Run = dict[str, float]  # one run's figures
Results = dict[str, dict[str, list[Run]]]  # scenario -> system -> runs


# --- TLS for the emulator -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tls:
    ca_file: Path
    chain_file: Path
    key_file: Path
    context: ssl.SSLContext  # trusts the CA, for this process's calls to the emulator


@contextlib.contextmanager
def throwaway_tls() -> Iterator[Tls]:
    with tempfile.TemporaryDirectory(prefix="lynx-bench-tls-") as folder:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        tls = Tls(
            Path(folder) / "ca.pem",
            Path(folder) / "server.pem",
            Path(folder) / "key.pem",
            ssl.create_default_context(),
        )
        ca.cert_pem.write_to_path(str(tls.ca_file))
        cert.private_key_pem.write_to_path(str(tls.key_file))
        tls.chain_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        tls.context.load_verify_locations(cafile=str(tls.ca_file))
        yield tls


def tls_emulator(
    tls: Tls, run_time: float, max_concurrent: int | None = None
) -> contextlib.AbstractContextManager[Emulator]:
    """``bench/tls_emulator.py``; ``max_concurrent`` jobs run at once (the rest wait in its
    queue, like a fal account's concurrency), unlimited when None."""
    extra = [] if max_concurrent is None else ["--max-concurrent", str(max_concurrent)]

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            str(BENCH / "tls_emulator.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cert-chain",
            str(tls.chain_file),
            "--key",
            str(tls.key_file),
            "--run-time",
            seconds(run_time),
            "--queue-wait",
            "0",
            *extra,
        ]

    return emulator_process(
        [], env=clean_env(), command=command, scheme="https", context=tls.context
    )


def emulator_stats(emulator: Emulator, *, jobs: bool = False) -> dict[str, Any]:
    """The emulator's stats, tolerating a slow answer from an emulator under load."""
    for attempt in range(STATS_TRIES):
        try:
            return emulator.stats(jobs=jobs)
        except OSError:
            if attempt == STATS_TRIES - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


# --- the two systems ----------------------------------------------------------------------------


class BaselineProcess(JsonLogProcess):
    """``bench/baseline.py``; ``start`` returns once it logged ``baseline_started``."""

    name = "baseline"

    def __init__(self, env: Mapping[str, str], argv: Sequence[str]) -> None:
        super().__init__(env)
        self.argv = list(argv)
        self.ready = False
        self.skipped = 0

    def on_line(self, line: dict[str, Any]) -> None:
        event = line.get("event")
        if event == "baseline_started":
            self.ready = True
        elif event == "message_skipped":
            self.skipped += 1

    async def start(self, stderr: IO[bytes], within: float = READY_S) -> None:
        await self.spawn(self.argv, stderr)
        await self.until(lambda: self.ready, within, "baseline_started")


class System:
    """How to start one system against a broker, an emulator and topics (again after a kill).

    ``mode`` is lynx-relay's ``RELAY_WATCH_MODE`` (the baseline always polls, as fal_client
    does); in webhook mode fal calls the relay's own ``/fal/webhook`` and the keys come from the
    emulator."""

    def __init__(
        self,
        kind: str,
        ctx: Context,
        emulator: Emulator,
        topics: Topics,
        n: int,
        *,
        mode: str = "poll",
        relay_settings: Mapping[str, str] | None = None,
    ) -> None:
        self.kind = kind
        bootstrap, tls = ctx.bootstrap, ctx.tls
        if kind == "lynx-relay":
            http_port = free_port()
            extra = {
                "SSL_CERT_FILE": str(tls.ca_file),
                "RELAY_LOG_LEVEL": "info",
                "RELAY_WATCH_MODE": mode,
                **ctx.relay_settings,
                **(relay_settings or {}),
            }
            if mode == "webhook":
                extra["RELAY_WEBHOOK_URL"] = f"http://127.0.0.1:{http_port}/fal/webhook"
                extra["FAL_JWKS_URL"] = f"{emulator.base_url}/_emulator/jwks.json"
            self.env = relay_env(
                bootstrap,
                emulator.base_url,
                topics,
                in_flight=n,
                jobs_partitions=JOBS_TOPIC_PARTITIONS,
                http_port=http_port,
                extra=extra,
            )
        else:
            host = emulator.base_url.removeprefix("https://")
            self.env = {
                **clean_env(),
                "FAL_KEY": FAL_KEY,
                "FAL_QUEUE_RUN_HOST": host,
                "SSL_CERT_FILE": str(tls.ca_file),
            }
            self.argv = [
                sys.executable,
                str(BENCH / "baseline.py"),
                "--bootstrap",
                bootstrap,
                "--requests-topic",
                topics.requests,
                "--results-topic",
                topics.results,
                "--group",
                topics.group,
                "--concurrency",
                str(n),
            ]

    def process(self) -> RelayProcess | BaselineProcess:
        if self.kind == "lynx-relay":
            return RelayProcess(self.env)
        return BaselineProcess(self.env, self.argv)


# --- reading results ----------------------------------------------------------------------------


class Collector:
    """Reads a topic from the start (``read_committed``), noting when each key first arrived."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        self.received: dict[str, float] = {}  # key -> time.time() when first read
        self.records = 0
        self.not_succeeded = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def _read(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    self.records += 1
                    key = record.key.decode() if record.key else ""
                    self.received.setdefault(key, now)
                    with contextlib.suppress(ValueError, AttributeError):
                        if json.loads(record.value).get("status") != "succeeded":
                            self.not_succeeded += 1
            self._changed.set()

    async def wait_for_keys(self, keys: Sequence[str], within: float, what: str) -> None:
        """Until every one of ``keys`` has been read."""
        try:
            async with asyncio.timeout(within):
                while not all(key in self.received for key in keys):
                    if self._task is not None and self._task.done():
                        self._task.result()
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            missing = sum(key not in self.received for key in keys)
            raise RuntimeError(
                f"{what}: {missing} of {len(keys)} missing after {within:.0f} s"
            ) from None

    async def wait_for(self, count: int, within: float, what: str) -> None:
        try:
            async with asyncio.timeout(within):
                while len(self.received) < count:
                    if self._task is not None and self._task.done():
                        self._task.result()
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise RuntimeError(
                f"{what}: {len(self.received)} of {count} within {within:.0f} s"
            ) from None


@contextlib.asynccontextmanager
async def collecting(bootstrap: str, topic: str) -> AsyncIterator[Collector]:
    collector = Collector(bootstrap, topic)
    await collector.consumer.start()
    collector._task = asyncio.create_task(collector._read())
    try:
        yield collector
    finally:
        collector._task.cancel()
        await asyncio.gather(collector._task, return_exceptions=True)
        await collector.consumer.stop()


@contextlib.asynccontextmanager
async def running(
    system: System, stderr: IO[bytes]
) -> AsyncIterator[RelayProcess | BaselineProcess]:
    process = system.process()
    try:
        await process.start(stderr)
        yield process
    finally:
        await process.close()


def request_record(rid: str, *, valid: bool = True) -> tuple[bytes, bytes]:
    body: dict[str, Any] = {"request_id": rid, "input": {"prompt": f"bench {rid}"}}
    if valid:
        body["input"]["image_url"] = "https://example.com/s.png"
    return rid.encode(), json.dumps(body).encode()


async def fresh_topics(bootstrap: str, label: str) -> Topics:
    topics = Topics.fresh("bench.run", label)
    await create_topics(
        bootstrap, topics, request_partitions=REQUEST_PARTITIONS, other_partitions=OTHER_PARTITIONS
    )
    return topics


def _prompt_ids(stats: dict[str, Any]) -> list[tuple[str, float]]:
    """(request id from the prompt, submitted_at) of every submission the emulator saw."""
    return [
        (str(job["input"]["prompt"]).removeprefix("bench "), epoch(job["submitted_at"]))
        for job in stats["jobs"]
    ]


def _quantile(values: Sequence[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# --- scenarios ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    bootstrap: str
    tls: Tls
    # Settings every lynx-relay of the run gets (``--relay-setting``), e.g. to compare
    # RELAY_FAL_HISTORY=false with the default.
    relay_settings: Mapping[str, str] = field(default_factory=dict)


async def throughput_run(
    ctx: Context,
    kind: str,
    label: str,
    *,
    run_time: float,
    requests: int,
    in_flight: int,
    relay_settings: Mapping[str, str] | None = None,
) -> Run:
    """Scenarios 1-3: a backlog of valid requests through one system; rate, CPU, latency, calls."""
    topics = await fresh_topics(ctx.bootstrap, label)
    ids = [f"{label}-{i}" for i in range(requests)]
    await publish(ctx.bootstrap, topics.requests, (request_record(r) for r in ids), PUBLISH_S)
    within = 120.0 + requests * 0.05 + requests / in_flight * run_time * 2
    with tls_emulator(ctx.tls, run_time) as emulator, tempfile.TemporaryFile() as stderr:
        system = System(kind, ctx, emulator, topics, in_flight, relay_settings=relay_settings)
        async with collecting(ctx.bootstrap, topics.results) as results:
            async with running(system, stderr) as process:
                cpu_ready = proc_cpu_s(process.pid) or 0.0
                await results.wait_for(requests, within, f"{kind} results")
                cpu = (proc_cpu_s(process.pid) or 0.0) - cpu_ready
                code = await process.terminate()
            stats = emulator_stats(emulator, jobs=True)
    if code != 0:
        print(f"warning: {kind} exited {code} on SIGTERM", file=sys.stderr)
    submissions = _prompt_ids(stats)
    first_submit: dict[str, float] = {}
    for rid, at in submissions:
        first_submit.setdefault(rid, at)
    latencies = sorted(results.received[rid] - first_submit[rid] for rid in ids)
    span = max(results.received.values()) - min(first_submit.values())
    calls = stats["calls"]
    return {
        "jobs_per_s": requests / span,
        "ceiling_share": requests / span / (in_flight / run_time) if run_time else 0.0,
        "cpu_ms_per_job": cpu / requests * 1000,
        "latency_p50_s": _quantile(latencies, 50),
        "latency_p99_s": _quantile(latencies, 99),
        "status_calls_per_job": calls["status"]["total"] / requests,
        "result_calls_per_job": calls["result"]["total"] / requests,
        "submissions_per_request": len(submissions) / requests,
        "not_succeeded": float(results.not_succeeded),
    }


async def http_cell(
    ctx: Context, kind: str, mode: str, label: str, *, run_time: float, waves: Sequence[int]
) -> Run:
    """Scenario 3: waves of ``run_time`` jobs through one system (the next wave once the last
    one's results are all read); per wave, fal calls per job and how late each result is.

    The first wave is "cold"; later waves are "warm": lynx-relay's poll mode has then seen jobs
    of this shape finish and knows their run time. Delay: the result read from Kafka minus the
    job's completion at fal (``submitted_at`` + run time: no queue wait, no concurrency limit)."""
    topics = await fresh_topics(ctx.bootstrap, label)
    out: Run = {}
    with tls_emulator(ctx.tls, run_time) as emulator, tempfile.TemporaryFile() as stderr:
        system = System(kind, ctx, emulator, topics, HTTP_IN_FLIGHT, mode=mode)
        async with (
            collecting(ctx.bootstrap, topics.results) as results,
            running(system, stderr) as process,
        ):
            done, watch_calls, all_delays = 0, 0, []
            for index, size in enumerate(waves):
                ids = [f"{label}-w{index}-{i}" for i in range(size)]
                before = emulator.calls()
                await publish(ctx.bootstrap, topics.requests, map(request_record, ids), PUBLISH_S)
                done += size
                await results.wait_for(done, run_time * 1.5 + HTTP_SLACK_S, f"{kind} results")
                calls = {k: n - before.get(k, 0) for k, n in emulator.calls().items()}
                submitted = dict(_prompt_ids(emulator_stats(emulator, jobs=True)))
                delays = [results.received[rid] - (submitted[rid] + run_time) for rid in ids]
                # The emulator counts a status stream connection as a status call.
                wave_calls = calls.get("status", 0) + calls.get("result", 0)
                watch_calls += wave_calls
                all_delays += delays
                out |= {
                    f"w{index}_calls": wave_calls / size,
                    f"w{index}_status": calls.get("status", 0) / size,
                    f"w{index}_delay_p50": statistics.median(delays),
                    f"w{index}_delay_max": max(delays),
                }
            await process.terminate()
    out |= {"all_calls": watch_calls / done, "all_delay_max": max(all_delays)}
    if results.not_succeeded:
        raise RuntimeError(f"{kind} ({mode}): {results.not_succeeded} results not succeeded")
    return out


async def memory_run(ctx: Context, kind: str, label: str, *, jobs: int) -> Run:
    """Scenario 4: RSS with ``jobs`` jobs in flight at fal (an hour each)."""
    topics = await fresh_topics(ctx.bootstrap, label)
    ids = [f"{label}-{i}" for i in range(jobs)]
    await publish(ctx.bootstrap, topics.requests, (request_record(r) for r in ids), PUBLISH_S)
    with tls_emulator(ctx.tls, 3600.0) as emulator, tempfile.TemporaryFile() as stderr:
        system = System(kind, ctx, emulator, topics, jobs)
        async with running(system, stderr) as process:
            idle = proc_rss_bytes(process.pid) or 0
            began = time.monotonic()
            reached = 0
            grew_at = began
            while time.monotonic() - began < FILL_S:
                with contextlib.suppress(OSError):
                    now_in_flight = int(emulator.stats()["in_flight"])
                    if now_in_flight > reached:
                        reached, grew_at = now_in_flight, time.monotonic()
                if reached >= jobs or time.monotonic() - grew_at > FILL_STALL_S:
                    break
                await asyncio.sleep(1.0)
            fill_s = time.monotonic() - began
            await asyncio.sleep(3.0)  # let what the jobs allocate settle
            rss = max(proc_rss_bytes(process.pid) or 0 for _ in range(3))
            # With thousands of jobs a slow exit is no measurement error: close() kills it.
            with contextlib.suppress(TimeoutError):
                await process.terminate(within=120.0)
    return {
        "in_flight": float(reached),
        "fill_s": fill_s,
        "rss_idle_mb": idle / 1e6,
        "rss_mb": rss / 1e6,
        "bytes_per_job": (rss - idle) / reached if reached else 0.0,
    }


async def dead_letter_run(ctx: Context, kind: str, label: str, *, messages: int) -> Run:
    """Scenario 5: invalid requests through the relay; dead letters per second."""
    topics = await fresh_topics(ctx.bootstrap, label)
    records = (request_record(f"{label}-{i}", valid=False) for i in range(messages))
    await publish(ctx.bootstrap, topics.requests, records, PUBLISH_S)
    with tls_emulator(ctx.tls, 0.0) as emulator, tempfile.TemporaryFile() as stderr:
        system = System(kind, ctx, emulator, topics, 64)
        async with (
            collecting(ctx.bootstrap, topics.dead_letters) as dlq,
            running(system, stderr) as process,
        ):
            cpu_ready = proc_cpu_s(process.pid) or 0.0
            await dlq.wait_for(messages, 120.0 + messages * 0.05, "dead letters")
            cpu = (proc_cpu_s(process.pid) or 0.0) - cpu_ready
            await process.terminate()
        submissions = int(emulator_stats(emulator)["submissions"])
    times = sorted(dlq.received.values())
    span = times[-1] - times[0]
    return {
        "msg_per_s": (messages - 1) / span if span > 0 else 0.0,
        "cpu_ms_per_msg": cpu / messages * 1000,
        "submissions": float(submissions),
    }


async def crash_run(
    ctx: Context, kind: str, label: str, *, in_flight: int, run_time: float, kill_after: float
) -> Run:
    """Scenario 6: kill -9 ``kill_after`` seconds after the emulator saw ``in_flight``
    submissions, restart, count paid duplicates."""
    topics = await fresh_topics(ctx.bootstrap, label)
    ids = [f"{label}-{i}" for i in range(in_flight)]
    await publish(ctx.bootstrap, topics.requests, (request_record(r) for r in ids), PUBLISH_S)
    with tls_emulator(ctx.tls, run_time) as emulator, tempfile.TemporaryFile() as stderr:
        system = System(kind, ctx, emulator, topics, in_flight)
        async with collecting(ctx.bootstrap, topics.results) as results:
            async with running(system, stderr) as first:
                began = time.monotonic()
                while int(emulator.stats()["submissions"]) < in_flight:
                    if time.monotonic() - began > SUBMIT_S:
                        raise RuntimeError(f"{kind}: {in_flight} submissions not seen in time")
                    await asyncio.sleep(0.02)
                await asyncio.sleep(kill_after)
                await first.kill()
            killed_at = time.time()
            published_before = len(results.received)
            async with running(system, stderr) as second:
                await results.wait_for(in_flight, 180.0 + run_time * 2, f"{kind} results")
                await second.terminate()
        stats = emulator_stats(emulator, jobs=True)
    prompts = [rid for rid, _ in _prompt_ids(stats)]
    duplicates = len(prompts) - len(set(prompts))
    return {
        "duplicates": float(duplicates),
        "cost_usd": duplicates * VIDEO_SECONDS * PRICE_PER_VIDEO_SECOND,
        "results_before_kill": float(published_before),
        "recovery_s": max(results.received.values()) - killed_at,
    }


async def run_all(
    bootstrap: str,
    tls: Tls,
    plan: Plan,
    only: Sequence[str],
    relay_settings: Mapping[str, str] | None = None,
) -> Results:
    ctx = Context(bootstrap, tls, dict(relay_settings or {}))
    results: Results = {}

    def note(scenario: str, kind: str, run: Run) -> None:
        results.setdefault(scenario, {}).setdefault(kind, []).append(run)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in run.items())
        print(f"  {scenario}, {kind}: {shown}", file=sys.stderr)

    for index in range(plan.runs):
        # Alternate the order so that drift in the machine's speed favours neither system.
        order = SYSTEMS if index % 2 == 0 else SYSTEMS[::-1]
        print(f"run {index + 1}/{plan.runs}", file=sys.stderr)
        if "http" in only:
            for run_time in plan.http_run_times:
                # A few jobs each, so all four run at once (waiting for jobs is most of it).
                cells = [("lynx-relay", mode) for mode in HTTP_MODES] + [("baseline", "poll")]
                runs = await asyncio.gather(
                    *(
                        http_cell(
                            ctx,
                            kind,
                            mode,
                            f"http-{mode if kind == 'lynx-relay' else 'b'}-"
                            f"{seconds(run_time)}s-{index}",
                            run_time=run_time,
                            waves=plan.http_waves,
                        )
                        for kind, mode in cells
                    )
                )
                for mode, run in zip(HTTP_MODES, runs[:-1], strict=True):
                    note(http_scenario(mode, run_time), "lynx-relay", run)
                    note(http_scenario(mode, run_time), "baseline", runs[-1])
        for kind in order:
            tag = f"{'r' if kind == 'lynx-relay' else 'b'}{index}"
            if "utilisation" in only:
                note(
                    "utilisation",
                    kind,
                    await throughput_run(
                        ctx,
                        kind,
                        f"util-{tag}",
                        run_time=plan.util_run_time,
                        requests=plan.util_requests,
                        in_flight=plan.util_in_flight,
                    ),
                )
            if "overhead" in only:
                note(
                    "overhead",
                    kind,
                    await throughput_run(
                        ctx,
                        kind,
                        f"over-{tag}",
                        run_time=0.0,
                        requests=plan.overhead_requests,
                        in_flight=plan.overhead_in_flight,
                        relay_settings=OVERHEAD_RELAY_SETTINGS,
                    ),
                )
            if "memory" in only:
                for scenario, jobs in memory_sizes(plan):
                    note(
                        scenario, kind, await memory_run(ctx, kind, f"{scenario}-{tag}", jobs=jobs)
                    )
            if "dead-letter" in only and kind == "lynx-relay":
                note(
                    "dead-letter",
                    kind,
                    await dead_letter_run(ctx, kind, f"dlq-{tag}", messages=plan.dlq_messages),
                )
            if "crash" in only:
                for scenario, kill_after in (("crash", CRASH_KILL_AFTER_S), ("crash-worst", 0.0)):
                    note(
                        scenario,
                        kind,
                        await crash_run(
                            ctx,
                            kind,
                            f"{scenario}-{tag}",
                            in_flight=plan.crash_in_flight,
                            run_time=plan.crash_run_time,
                            kill_after=kill_after,
                        ),
                    )
    return results


def memory_sizes(plan: Plan) -> tuple[tuple[str, int], ...]:
    return (("memory-small", plan.memory_jobs_small), ("memory", plan.memory_jobs))


def http_scenario(mode: str, run_time: float) -> str:
    return f"http-{mode}-{seconds(run_time)}s"


# --- the report ---------------------------------------------------------------------------------


def _cell(results: Results, scenario: str, kind: str, key: str, fmt: str) -> str:
    runs = results.get(scenario, {}).get(kind, [])
    if not runs:
        return "not run"
    if key == "bytes_per_job" and not all(run["in_flight"] for run in runs):
        return "no job in flight"
    return cell([run[key] for run in runs], fmt)


def _median(results: Results, scenario: str, kind: str, key: str) -> float | None:
    runs = results.get(scenario, {}).get(kind, [])
    return statistics.median(run[key] for run in runs) if runs else None


def _ratio(results: Results, scenario: str, key: str, *, lower_is_better: bool) -> str:
    relay = _median(results, scenario, "lynx-relay", key)
    base = _median(results, scenario, "baseline", key)
    if relay is None or base is None or relay == 0 or base == 0:
        return ""
    if math.isnan(relay) or math.isnan(base):
        return ""
    if scenario.startswith("memory") and _median(
        results, scenario, "lynx-relay", "in_flight"
    ) != _median(results, scenario, "baseline", "in_flight"):
        return ""  # RSS with different numbers of jobs in flight is no comparison
    ratio = base / relay if lower_is_better else relay / base
    return f"{ratio:.2f}x"


ROWS: tuple[tuple[str, str, str, str, bool | None], ...] = (
    # scenario, label, key, format, lower is better (None: no ratio)
    ("utilisation", "1. utilisation: jobs/s", "jobs_per_s", ".1f", False),
    ("utilisation", "1. utilisation: share of N/L", "ceiling_share", ".1%", False),
    ("utilisation", "1. utilisation: latency p50 (s)", "latency_p50_s", ".2f", True),
    ("overhead", "2. overhead: jobs/s", "jobs_per_s", ".1f", False),
    ("overhead", "2. overhead: CPU ms per job", "cpu_ms_per_job", ".2f", True),
    ("overhead", "2. overhead: latency p50 (s)", "latency_p50_s", ".3f", True),
    ("overhead", "2. overhead: latency p99 (s)", "latency_p99_s", ".3f", True),
    ("utilisation", "3. HTTP: status calls per 2 s job", "status_calls_per_job", ".2f", True),
    ("utilisation", "3. HTTP: result calls per job", "result_calls_per_job", ".2f", None),
    ("overhead", "3. HTTP: status calls per instant job", "status_calls_per_job", ".2f", True),
    ("memory", "4. memory", "", "", None),  # stands for memory_rows(plan)
    ("dead-letter", "5. dead letters: msg/s", "msg_per_s", ".1f", None),
    ("dead-letter", "5. dead letters: CPU ms per msg", "cpu_ms_per_msg", ".2f", None),
    ("crash", "6. crash: duplicate submissions", "duplicates", ".0f", None),
    ("crash", "6. crash: their cost ($)", "cost_usd", ".2f", None),
    ("crash", "6. crash: kill to last result (s)", "recovery_s", ".1f", True),
    ("crash-worst", "6b. crash at the last submit: duplicates", "duplicates", ".0f", None),
    ("crash-worst", "6b. crash at the last submit: cost ($)", "cost_usd", ".2f", None),
)


def http_rows(plan: Plan) -> list[tuple[str, str, str, str, bool | None]]:
    """Scenario 3's rows: per run time, poll cold and warm, stream and webhook."""
    rows: list[tuple[str, str, str, str, bool | None]] = []
    warm = len(plan.http_waves) - 1
    for run_time in plan.http_run_times:
        head = f"3. HTTP, {seconds(run_time)} s jobs"
        poll = http_scenario("poll", run_time)
        rows += [
            (poll, f"{head}, poll, first of a shape: calls per job", "w0_calls", ".1f", True),
            (poll, f"{head}, poll, shape known: calls per job", f"w{warm}_calls", ".1f", True),
            (
                poll,
                f"{head}, poll, first of a shape: result delay max (s)",
                "w0_delay_max",
                ".2f",
                True,
            ),
            (
                poll,
                f"{head}, poll, shape known: result delay max (s)",
                f"w{warm}_delay_max",
                ".2f",
                True,
            ),
        ]
        for mode in HTTP_MODES[1:]:
            scenario = http_scenario(mode, run_time)
            rows += [
                (scenario, f"{head}, {mode}: calls per job", "all_calls", ".1f", True),
                (scenario, f"{head}, {mode}: result delay max (s)", "all_delay_max", ".2f", True),
            ]
    return rows


def memory_rows(plan: Plan) -> list[tuple[str, str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, str, bool | None]] = []
    for scenario, jobs in memory_sizes(plan):
        head = f"4. memory, {jobs:,} jobs"
        rows += [
            (scenario, f"{head}: in flight reached", "in_flight", ".0f", None),
            (scenario, f"{head}: RSS (MB)", "rss_mb", ".1f", True),
            (scenario, f"{head}: bytes per in-flight job", "bytes_per_job", ",.0f", True),
            (scenario, f"{head}: time to fill (s)", "fill_s", ".1f", True),
        ]
    return rows


def report(results: Results, plan: Plan, meta: Mapping[str, Any]) -> str:
    lines = [
        "# lynx-relay vs the baseline (aiokafka + fal_client + a semaphore)",
        "",
        f"- date: {meta['date']}; commit: {meta['commit']}",
        f"- machine: {meta['machine']}",
        f"- reproduce: `{meta['command']}`"
        + (f" (took {int(meta['duration_s']) / 60:.0f} min)" if meta.get("duration_s") else ""),
        f"- sizes: {meta['sizes']}",
        *(f"- note: {note}" for note in meta["notes"]),
        "- everything on loopback on this machine: one single-node Kafka, a fresh TLS fal "
        "emulator per run (both systems speak https to it), fresh topics (requests: "
        f"{REQUEST_PARTITIONS} partitions); requests published before the system starts",
        "- cells: median (min-max) over the runs; ratio: how many times better lynx-relay's "
        "median is (above 1: lynx-relay better)",
        "",
        "| figure | lynx-relay | baseline | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    at = next(i for i, row in enumerate(ROWS) if row[0] == "memory")
    rows = (*ROWS[:at], *http_rows(plan), *memory_rows(plan), *ROWS[at + 1 :])
    for scenario, label, key, fmt, lower in rows:
        if scenario not in results:
            continue
        if scenario == "dead-letter":
            base = "no dead-letter topic"
        else:
            base = _cell(results, scenario, "baseline", key, fmt)
        ratio = "" if lower is None else _ratio(results, scenario, key, lower_is_better=lower)
        lines.append(
            f"| {label} | {_cell(results, scenario, 'lynx-relay', key, fmt)} | {base} | {ratio} |"
        )
    lines += ["", *notes(results, plan)]
    return "\n".join(lines) + "\n"


def notes(results: Results, plan: Plan) -> list[str]:
    out = ["## What the scenarios did, and how to read them", ""]
    if "utilisation" in results:
        out.append(
            f"- **1. utilisation**: N = {plan.util_in_flight} (`RELAY_MAX_IN_FLIGHT` / the "
            f"semaphore), every job {seconds(plan.util_run_time)} s at fal, "
            f"{plan.util_requests} requests; Little's ceiling N/L = "
            f"{plan.util_in_flight / plan.util_run_time:.0f} jobs/s. jobs/s = requests / (first "
            "submission at fal to last result read). The relay polls on its adaptive schedule "
            "(1 s..10 s; it learns the run time after the first jobs), fal_client every 0.1 s. "
            "Both keep fal close to the ceiling; what is left is the ramp (filling N slots from "
            "a cold start) and the delay between a job's end and the poll that sees it, which "
            "costs the relay less than its far fewer calls suggest because it learns the run "
            "time; `stream` or `webhook` mode would remove the poll delay altogether."
        )
    if "overhead" in results:
        out.append(
            f"- **2. overhead**: {plan.overhead_requests} instant jobs, N = "
            f"{plan.overhead_in_flight}; the relay with `RELAY_POLL_MIN_INTERVAL_S=0.1`, "
            "fal_client's interval (its default 1 s makes an instant job wait a second for its "
            "first status call, so N / 1 s would bound the rate: a schedule, not an overhead). "
            "CPU is the system process's user + system time from "
            "ready to the last result (it includes Kafka, TLS, JSON, logging; the relay's also "
            "its ledger and transactions). Latency: submission at fal to the result read from "
            "Kafka (the relay's includes its Kafka transaction). With N jobs in flight on 2 "
            "shared cores both systems are CPU-bound here, so latency is mostly a job waiting "
            "its turn among the N in flight (about N / jobs/s): the medians say little, the "
            "p99 shows the tail."
        )
    if (
        "utilisation" in results
        or "overhead" in results
        or any(scenario.startswith("http-") for scenario in results)
    ):
        waves = " then ".join(str(size) for size in plan.http_waves)
        times = " and ".join(f"{seconds(t)} s" for t in plan.http_run_times)
        out.append(
            "- **3. HTTP cost**: calls the emulator counted after the submit (status calls, a "
            "status stream counting as one, and result calls), per job. In scenarios 1 and 2, "
            f"over the whole backlog. The per-mode rows: jobs of {times}, waves of {waves} "
            "requests (the next once the last one's results are all read), N = "
            f"{HTTP_IN_FLIGHT}; lynx-relay in each watch mode and the baseline run at the same "
            "time, each with its own emulator. 'first of a shape' is the first wave; 'shape "
            "known' the last, when the relay's poll mode has seen jobs like these finish and "
            "polls around their expected end (stream and webhook: over all waves). Result "
            "delay: the result read from Kafka minus the job's completion at fal. fal_client "
            "polls every 0.1 s: a job of L seconds costs it about 10 x L status calls, for a "
            "result about 0.1 s late; lynx-relay polls every second while it does not know the "
            "run time, and around the expected end once it does; `stream` needs one connection "
            "and one result call, `webhook` none (fal sends the result)."
        )
    if "memory" in results or "memory-small" in results:
        out.append(
            f"- **4. memory**: {plan.memory_jobs_small:,} and {plan.memory_jobs:,} requests of "
            "hour-long jobs, N = the same; RSS (`VmRSS`) once the emulator holds them all (or "
            f"when it has held no more for {FILL_STALL_S:.0f} s, or after {FILL_S:.0f} s: see "
            "'in flight reached'); bytes per job = (RSS - RSS when ready) / jobs in flight. The "
            "baseline keeps a task polling every 0.1 s per job, so with thousands in flight it "
            "saturates its CPU and fills slowly."
        )
        short = [
            jobs
            for scenario, jobs in memory_sizes(plan)
            if (_median(results, scenario, "baseline", "in_flight") or 0) < jobs
            and scenario in results
        ]
        if short:
            out.append(
                f"- **4. memory, the baseline at {', '.join(f'{j:,}' for j in short)}**: its "
                "tasks all start in one turn of the event loop, and every request queued in "
                "httpx's connection pool (httpcore 1.0, fal_client's default limits: 100 "
                "connections) scans the whole queue, so queuing N requests costs N^2 and blocks "
                "the loop (measured with httpx alone: 6.5 s at 1,000, 28 s at 2,000, 116 s at "
                "4,000); requests that wait longer than the 120 s timeout for a connection leave "
                "their pool slots behind (encode/httpcore#1093), and from about 2,000 jobs the "
                "pool runs out of slots for good (about 1,400 in flight). fal_client takes no "
                "client or limits of ours; a 10,000-connection pool (by overriding its private "
                "`_client`) got to 7,415 and stalled too. A user at this scale would have to "
                "write their own submit-and-poll loop: no longer this baseline."
            )
    if "dead-letter" in results:
        out.append(
            f"- **5. dead letters**: {plan.dlq_messages} requests without `image_url` (schema "
            "errors): each is copied to the dead-letter topic and gets a `failed` result event "
            "and a `rejected` ledger entry, in one transaction; msg/s from the first to the last "
            "dead letter read. The baseline has no dead-letter path: it would submit such a "
            "request to fal (a 422) and publish a failed event, or skip a message it cannot parse."
        )
    if "crash" in results:
        out.append(
            f"- **6. crash**: {plan.crash_in_flight} requests of {seconds(plan.crash_run_time)} s "
            f"jobs, N = {plan.crash_in_flight}; `kill -9` {CRASH_KILL_AFTER_S:g} s after the "
            f"emulator has seen the {plan.crash_in_flight}th submission (all jobs running at "
            "fal, none finished), then the same system "
            "is started again on the same group; duplicates = submissions - distinct requests, "
            f"at ${VIDEO_SECONDS * PRICE_PER_VIDEO_SECOND:.4f} each ({VIDEO_SECONDS} s of video x "
            f"${PRICE_PER_VIDEO_SECOND:.2f}). The baseline's offsets are committed only when a "
            "request is done, so every request in flight is redelivered and submitted (paid) "
            "again; lynx-relay resumes the jobs its ledger holds, and asks fal's request "
            "history (the emulator's) about every submit whose answer never reached the ledger "
            "(its `intent` entry): adopted if fal has it, submitted again only if not. Without "
            "the history (`--relay-setting RELAY_FAL_HISTORY=false`) it pays again for a job "
            "killed inside its ledger window (see `bench/results/ledger-window.md`). "
            "Kill to last result includes the 10 s session timeout of the dead consumer. "
            "**6b** is the worst case for lynx-relay: the kill comes within a few ms of the last "
            "submission (this script polls the emulator every 20 ms), when the jobs that were "
            "just submitted together have their ledger entries still in flight."
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run (smoke run)")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the request counts (default 1)"
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios (default: all of {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--note",
        action="append",
        default=[],
        help="a line for the results file, e.g. what else ran on the machine (repeatable)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="the Markdown file (a .json is written next to it; default: "
        "bench/results/latest.md; with --quick: nowhere)",
    )
    parser.add_argument(
        "--relay-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for every lynx-relay of the run, e.g. RELAY_FAL_HISTORY=false "
        "(repeatable; named in the report's command line)",
    )
    parser.add_argument(
        "--report-from",
        type=Path,
        default=None,
        metavar="JSON",
        help="measure nothing: write the report again from a results .json (e.g. after a "
        "change to the report's wording), next to it unless --output says where",
    )
    args = parser.parse_args(argv)
    if args.report_from is not None:
        return rewrite_report(args.report_from, args.output)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    if args.scale != 1.0:
        plan = plan.scaled(args.scale)
    if args.runs is not None:
        plan = replace(plan, runs=args.runs)
    output: Path | None = args.output or (None if args.quick else RESULTS / "latest.md")
    command = shlex.join(["uv", "run", "python", "bench/run.py", *(argv or sys.argv[1:])])
    reduced = args.quick or args.scale < 1.0 or plan.runs < FULL.runs
    sizes = (
        f"{'REDUCED (not the full sizes), ' if reduced else ''}"
        + ", ".join(f"{k}={v}" for k, v in asdict(plan).items())
        + f"; full sizes: {', '.join(f'{k}={v}' for k, v in asdict(FULL).items())}"
    )
    meta = {
        "date": date_text(),
        "commit": git_commit(),
        "machine": machine_text(),
        "command": command,
        "sizes": sizes,
        "notes": args.note,
    }
    # aiokafka warns (and retries) while a fresh topic's leaders are being elected: not news.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    started = time.monotonic()
    with throwaway_tls() as tls, kafka_broker() as bootstrap:
        settings = dict(item.split("=", 1) for item in args.relay_setting)
        results = asyncio.run(run_all(bootstrap, tls, plan, only, settings))
    meta["duration_s"] = f"{time.monotonic() - started:.0f}"
    text = report(results, plan, meta)
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        payload = {"meta": meta, "plan": asdict(plan), "results": results}
        output.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {output} and {output.with_suffix('.json')}", file=sys.stderr)
    return 0


def rewrite_report(source: Path, output: Path | None) -> int:
    payload = json.loads(source.read_text())
    fields: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in payload["plan"].items()
    }
    text = report(payload["results"], Plan(**fields), payload["meta"])
    target = output or source.with_suffix(".md")
    target.write_text(text)
    print(f"wrote {target} from {source}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
