"""The relay copying finished videos to object storage: 20 outputs of 200 MiB at once.

Issue 16's acceptance item: "bench: 20 outputs of 200 MB copied at once: throughput and RSS
growth (at most 64 MiB)". ``storage_clients.py`` chose the client with copies in a worker of
its own; this measures the relay itself (``python -m service run`` with ``RELAY_OUTPUT_URL``),
every part a real process on loopback:

- a private single-node Kafka broker (``scripts/kafka``) and a private S3Proxy
  (``scripts/s3proxy`` with the full JIT, as ``storage_clients.s3proxy()`` starts it; filesystem
  backend in a temporary folder), both for the whole run; per cell and run fresh topics, a fresh
  fal emulator (``--run-time 0.5 --queue-wait 0 --output-bytes 200M``: every job ends 0.5 s
  after its submit with a 200 MiB MP4, streamed) and a fresh relay with
  ``RELAY_OUTPUT_URL=s3://bench/<prefix>/``, ``RELAY_OUTPUT_ENDPOINT_URL`` = S3Proxy,
  ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` = S3Proxy's identity and credential,
  ``RELAY_MAX_IN_FLIGHT=20``, the default watch mode (poll) and the cell's output settings;
- cells: the defaults (``RELAY_OUTPUT_MAX_COPIES=4``, ``RELAY_OUTPUT_PART_MIB=8``), 8 copies of
  5 MiB parts, and 20 copies of 5 MiB parts (no bound in effect: what the bound costs);
- one warm-up request first (a 1 MiB output, copied and published: the consumer group joined,
  the S3 and CDN clients built); then the relay is **ready**: its VmRSS is read and its peak
  mark reset (``5`` written to ``/proc/<pid>/clear_refs``); VmRSS is also sampled every 50 ms
  by a thread here, the fallback where the reset is refused. Then 20 requests are published at
  once and their results read from the results topic (read_committed);
- **RSS growth** = peak (VmHWM at the end) - VmRSS when ready; also shown over VmRSS at
  ``relay_started`` (before the warm-up: the conservative figure) and what stays after;
- **throughput** = total bytes / (last result read - the first job's completion at fal). The
  emulator's job list has no completion time; with no queue wait and no concurrency limit a job
  completes at ``submitted_at`` + run time. The span includes the relay noticing the
  completions (poll mode: its first status call comes about 1 s after the submit) and the
  Kafka transactions that publish the results;
- **CPU**: the relay's user + system seconds (``/proc/<pid>/stat``, every thread: obstore's
  Tokio threads too) from the publish to the last result read; S3Proxy's and the emulator's
  beside it;
- checks: every result ``succeeded`` with ``video.fal_url`` and ``video.url`` = the stored
  object, ``file_size`` the output size; every object's size by HEAD (botocore, to S3Proxy); no
  copy retried (``lynx_relay_output_copies_total``). The objects are deleted after each run.

Run (from the project root)::

    uv run python bench/output_relay.py             # 3 cells x 2 runs of 20 x 200 MiB (~10 min)
    uv run python bench/output_relay.py --runs 3
    uv run python bench/output_relay.py --quick     # 3 outputs of 20 MiB, 1 run: prints only

The full run writes ``bench/results/output-relay.md``; ``--quick`` writes only with ``--output``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer
from harness import (
    PUBLISH_S,
    ROOT,
    Emulator,
    RelayProcess,
    Topics,
    cell,
    clean_env,
    create_topics,
    drop_proxies,
    emulator_process,
    epoch,
    git_commit,
    header_lines,
    kafka_broker,
    metric_samples,
    proc_cpu_s,
    proc_rss_bytes,
    publish,
    relay_env,
    request_record,
    write_output,
)
from storage_clients import (
    CREDENTIAL,
    IDENTITY,
    REGION,
    S3PROXY_HEAP_OPTS,
    S3PROXY_JVM_OPTS,
    S3Proxy,
    s3proxy,
)

MB = 1000 * 1000
MiB = 1024 * 1024
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "output-relay.md"
BUCKET = "bench"
RSS_BOUND_MIB = 64
RUN_TIME_S = 0.5
IN_FLIGHT = 20
REQUEST_PARTITIONS = 4
OTHER_PARTITIONS = 1
JOBS_PARTITIONS = 1
WARM_UP_BYTES = MiB
SAMPLE_S = 0.05
RESULTS_S = 1800.0  # 4 GiB through S3Proxy on 2 cores: minutes, not half an hour
COPIES_METRIC = "lynx_relay_output_copies"
PACKAGES = ("obstore", "httpx", "aiokafka")


@dataclass(frozen=True, slots=True)
class Cell:
    label: str
    settings: dict[str, str]  # RELAY_OUTPUT_* beyond the URL; empty = the defaults


CELLS = (
    Cell("defaults: 4 copies at a time, 8 MiB parts", {}),
    Cell(
        "8 copies at a time, 5 MiB parts",
        {"RELAY_OUTPUT_MAX_COPIES": "8", "RELAY_OUTPUT_PART_MIB": "5"},
    ),
    Cell(
        "20 copies at a time (all at once), 5 MiB parts",
        {"RELAY_OUTPUT_MAX_COPIES": "20", "RELAY_OUTPUT_PART_MIB": "5"},
    ),
)


@dataclass(frozen=True, slots=True)
class Plan:
    outputs: int
    size: int  # bytes per output
    size_text: str  # as the emulator's --output-bytes takes it


FULL = Plan(outputs=20, size=200 * MiB, size_text="200M")
QUICK = Plan(outputs=3, size=20 * MiB, size_text="20M")


@dataclass
class Outcome:
    cell: str
    run: int
    outputs: int
    bytes: int
    rss_started_mib: float
    rss_ready_mib: float
    peak_mib: float  # VmHWM since the ready point (or the sampled maximum)
    peak_source: str  # "VmHWM" or "sampled"
    sampled_peak_mib: float
    rss_after_mib: float
    span_s: float  # first completion at fal -> last result read
    publish_to_last_s: float
    relay_cpu_s: float
    s3proxy_cpu_s: float
    emulator_cpu_s: float
    copies_stored: float
    copies_retried: float
    warnings: dict[str, int] = field(default_factory=dict)

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.rss_ready_mib

    @property
    def growth_since_started_mib(self) -> float:
        return max(self.peak_mib, self.rss_ready_mib) - self.rss_started_mib

    @property
    def retained_mib(self) -> float:
        return self.rss_after_mib - self.rss_ready_mib

    @property
    def throughput(self) -> float:
        return self.bytes / MB / self.span_s

    @property
    def cpu_per_100mb(self) -> float:
        return self.relay_cpu_s * 100 * MB / self.bytes


# --- /proc of the relay -------------------------------------------------------------------------


def status_kib(pid: int, name: str) -> int | None:
    """A ``/proc/<pid>/status`` figure (VmRSS, VmHWM) in KiB; None if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return None


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its VmRSS (Linux 4.0+); False where not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


class RssSampler:
    """VmRSS every ``SAMPLE_S`` in a thread; ``peak`` is the maximum since ``reset``."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            rss = proc_rss_bytes(self._pid)
            if rss is None:
                return
            with self._lock:
                self._peak = max(self._peak, rss)

    def reset(self) -> None:
        with self._lock:
            self._peak = proc_rss_bytes(self._pid) or 0

    @property
    def peak(self) -> int:
        with self._lock:
            return self._peak


# --- the relay and the results ------------------------------------------------------------------


class Relay(RelayProcess):
    """``python -m service run``, counting warnings (and worse) by event."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.warnings: dict[str, int] = {}

    def on_line(self, line: dict[str, Any]) -> None:
        super().on_line(line)
        if line.get("level") in ("warning", "error", "critical"):
            event = str(line.get("event"))
            self.warnings[event] = self.warnings.get(event, 0) + 1

    def copies(self) -> dict[str, float]:
        """``lynx_relay_output_copies_total`` by outcome."""
        return {
            labels["outcome"]: value
            for name, labels, value in metric_samples(self.metrics_text(), COPIES_METRIC)
            if name == f"{COPIES_METRIC}_total"
        }


class Results:
    """The results topic, read as it fills (committed records only): request id -> (the wall
    clock when read, the result)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        self.read: dict[str, tuple[float, dict[str, Any]]] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Results:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _read(self) -> None:
        async for record in self._consumer:
            at = time.time()
            result: dict[str, Any] = json.loads(record.value)
            self.read[str(result["request_id"])] = (at, result)
            self._changed.set()

    async def wait(self, ids: Sequence[str], within: float, relay: Relay) -> None:
        try:
            async with asyncio.timeout(within):
                while not all(rid in self.read for rid in ids):
                    if relay.process is not None and relay.process.returncode is not None:
                        raise RuntimeError(f"the relay exited\n{relay.diagnostics()}")
                    if self._task is not None and self._task.done():
                        self._task.result()  # the reader's error, if any
                        raise RuntimeError("the results reader stopped")
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 1.0)
        except TimeoutError:
            got = sum(rid in self.read for rid in ids)
            raise RuntimeError(
                f"{got} of {len(ids)} results within {within:.0f} s\n{relay.diagnostics()}"
            ) from None


def output_env(
    bootstrap: str, emulator: Emulator, topics: Topics, *, server: S3Proxy, prefix: str, cell: Cell
) -> dict[str, str]:
    base = relay_env(
        bootstrap,
        emulator.base_url,
        topics,
        in_flight=IN_FLIGHT,
        jobs_partitions=JOBS_PARTITIONS,
        extra={
            "RELAY_OUTPUT_URL": f"s3://{BUCKET}/{prefix}/",
            "RELAY_OUTPUT_ENDPOINT_URL": server.endpoint,
            "RELAY_OUTPUT_REGION": REGION,
            **cell.settings,
        },
    )
    # Nothing inherited may point the store elsewhere: only S3Proxy's identity.
    env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
    env["AWS_ACCESS_KEY_ID"] = IDENTITY
    env["AWS_SECRET_ACCESS_KEY"] = CREDENTIAL
    return env


def object_key_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "s3" or parts.netloc != BUCKET:
        raise RuntimeError(f"{url} is not an object of s3://{BUCKET}")
    return parts.path.lstrip("/")


def check_results(
    results: Results, ids: Sequence[str], size: int, s3: Any, prefix: str
) -> list[str]:
    """Every result succeeded, with fal's URL and the stored object of the right size (HEAD);
    returns the objects' keys."""
    keys = []
    for rid in ids:
        _at, result = results.read[rid]
        if result.get("status") != "succeeded":
            raise RuntimeError(f"{rid}: {result.get('status')}: {result.get('error')}")
        video = result.get("video") or {}
        if not video.get("fal_url"):
            raise RuntimeError(f"{rid}: no video.fal_url in {video}")
        key = object_key_of(str(video.get("url")))
        if not key.startswith(prefix + "/"):
            raise RuntimeError(f"{rid}: the object {key} is not under {prefix}/")
        if video.get("file_size") != size:
            raise RuntimeError(f"{rid}: file_size {video.get('file_size')}, expected {size}")
        head = s3.head_object(Bucket=BUCKET, Key=key)
        if head["ContentLength"] != size:
            raise RuntimeError(f"{rid}: {key} holds {head['ContentLength']} bytes, not {size}")
        keys.append(key)
    return keys


def first_completion(emulator: Emulator, results: Results, ids: Sequence[str]) -> float:
    """The earliest completion at fal of the requests' jobs: ``submitted_at`` + run time (no
    queue wait, no concurrency limit: a job starts at its submit)."""
    jobs = {str(job["request_id"]): job for job in emulator.stats(jobs=True)["jobs"]}
    completions = []
    for rid in ids:
        fal_id = str(results.read[rid][1].get("fal_request_id"))
        job = jobs.get(fal_id)
        if job is None or job["state"] != "COMPLETED" or job["outcome"] != "succeeded":
            raise RuntimeError(f"{rid}: the emulator's job {fal_id} is {job}")
        completions.append(epoch(job["submitted_at"]) + RUN_TIME_S)
    return min(completions)


@contextlib.contextmanager
def _emulator(plan: Plan) -> Iterator[Emulator]:
    options = [
        "--run-time",
        str(RUN_TIME_S),
        "--queue-wait",
        "0",
        "--output-bytes",
        plan.size_text,
    ]
    with emulator_process(options, env=clean_env()) as emulator:
        yield emulator


async def run_cell(
    bootstrap: str, server: S3Proxy, plan: Plan, cell: Cell, *, index: int, run: int
) -> Outcome:
    name = f"c{index}-r{run}"
    topics = Topics.fresh("bench.output-relay", name)
    await create_topics(
        bootstrap,
        topics,
        request_partitions=REQUEST_PARTITIONS,
        other_partitions=OTHER_PARTITIONS,
    )
    prefix = f"{name}-{time.monotonic_ns()}"
    s3 = server.client()
    with _emulator(plan) as emulator, tempfile.TemporaryFile() as stderr:
        relay = Relay(
            output_env(bootstrap, emulator, topics, server=server, prefix=prefix, cell=cell)
        )
        keys: list[str] = []
        try:
            async with Results(bootstrap, topics.results) as results:
                await relay.start(stderr)
                pid = relay.pid
                rss_started = proc_rss_bytes(pid) or 0
                warm_up = f"{name}-warm-up"
                await publish(
                    bootstrap,
                    topics.requests,
                    [request_record(warm_up, f"warm-up [emulator:output-bytes={WARM_UP_BYTES}]")],
                    PUBLISH_S,
                )
                await results.wait([warm_up], 120.0, relay)
                keys += check_results(results, [warm_up], WARM_UP_BYTES, s3, prefix)
                with RssSampler(pid) as sampler:
                    await asyncio.sleep(0.5)  # the warm-up's last steps (ledger, commit)
                    rss_ready = proc_rss_bytes(pid) or 0
                    hwm_reset = reset_peak(pid)
                    sampler.reset()
                    cpu0 = proc_cpu_s(pid) or 0.0
                    s3proxy0 = server.cpu_s() or 0.0
                    emulator0 = emulator.server_cpu_s() or 0.0
                    copies0 = relay.copies()
                    warnings0 = dict(relay.warnings)
                    ids = [f"{name}-{i:02d}" for i in range(plan.outputs)]
                    published = time.time()
                    await publish(
                        bootstrap,
                        topics.requests,
                        (request_record(rid) for rid in ids),
                        PUBLISH_S,
                    )
                    await results.wait(ids, RESULTS_S, relay)
                    relay_cpu = (proc_cpu_s(pid) or 0.0) - cpu0
                    s3proxy_cpu = (server.cpu_s() or 0.0) - s3proxy0
                    emulator_cpu = (emulator.server_cpu_s() or 0.0) - emulator0
                    hwm = status_kib(pid, "VmHWM")
                    rss_after = proc_rss_bytes(pid) or 0
                    sampled = sampler.peak
                copies = relay.copies()
                last_read = max(results.read[rid][0] for rid in ids)
                first = first_completion(emulator, results, ids)
                keys += check_results(results, ids, plan.size, s3, prefix)
            code = await relay.terminate()
            if code != 0:
                raise RuntimeError(f"the relay exited {code} on SIGTERM\n{relay.diagnostics()}")
        finally:
            await relay.close()
            for key in keys:
                s3.delete_object(Bucket=BUCKET, Key=key)
    peak = hwm * 1024 if hwm_reset and hwm is not None else sampled
    return Outcome(
        cell=cell.label,
        run=run,
        outputs=plan.outputs,
        bytes=plan.outputs * plan.size,
        rss_started_mib=rss_started / MiB,
        rss_ready_mib=rss_ready / MiB,
        peak_mib=peak / MiB,
        peak_source="VmHWM" if hwm_reset and hwm is not None else "sampled",
        sampled_peak_mib=sampled / MiB,
        rss_after_mib=rss_after / MiB,
        span_s=last_read - first,
        publish_to_last_s=last_read - published,
        relay_cpu_s=relay_cpu,
        s3proxy_cpu_s=s3proxy_cpu,
        emulator_cpu_s=emulator_cpu,
        copies_stored=copies.get("stored", 0.0) - copies0.get("stored", 0.0),
        copies_retried=copies.get("retried", 0.0) - copies0.get("retried", 0.0),
        warnings={
            event: count - warnings0.get(event, 0)
            for event, count in relay.warnings.items()
            if count > warnings0.get(event, 0)
        },
    )


async def run_all(bootstrap: str, server: S3Proxy, plan: Plan, runs: int) -> list[Outcome]:
    server.client().create_bucket(Bucket=BUCKET)
    outcomes = []
    for run in range(runs):
        # Alternate the order, so that no cell always runs on a fresh (or a warm) S3Proxy.
        order = list(enumerate(CELLS)) if run % 2 == 0 else list(reversed(list(enumerate(CELLS))))
        for index, c in order:
            outcome = await run_cell(bootstrap, server, plan, c, index=index, run=run + 1)
            outcomes.append(outcome)
            print(
                f"run {run + 1}: {c.label}: {outcome.throughput:.0f} MB/s over "
                f"{outcome.span_s:.1f} s, RSS ready {outcome.rss_ready_mib:.1f} MiB, peak "
                f"{outcome.peak_mib:.1f} MiB ({outcome.peak_source}; sampled "
                f"{outcome.sampled_peak_mib:.1f}), growth {outcome.growth_mib:.1f} MiB, "
                f"relay CPU {outcome.relay_cpu_s:.1f} s, S3Proxy CPU "
                f"{outcome.s3proxy_cpu_s:.1f} s, retried {outcome.copies_retried:g}, "
                f"warnings {outcome.warnings or 'none'}",
                file=sys.stderr,
            )
    return outcomes


# --- the report ---------------------------------------------------------------------------------


def report(
    outcomes: Sequence[Outcome], plan: Plan, runs: int, command: str, commit_at_start: str
) -> str:
    commit = git_commit()
    if commit != commit_at_start:
        commit = f"{commit_at_start} at the start, {commit} at the end (the tree changed)"
    jvm = " ".join(
        os.environ.get(name, default)
        for name, default in (
            ("LYNX_S3PROXY_HEAP_OPTS", S3PROXY_HEAP_OPTS),
            ("LYNX_S3PROXY_JVM_OPTS", S3PROXY_JVM_OPTS),
        )
    )
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in PACKAGES)
    total_mb = plan.outputs * plan.size / MB
    sources = sorted({o.peak_source for o in outcomes})
    lines = [
        f"# Output storage in the relay: {plan.outputs} outputs of "
        f"{plan.size / MiB:g} MiB copied at once",
        "",
        *header_lines(commit),
        f"- packages: {versions}; S3Proxy 2.6.0 via scripts/s3proxy (filesystem backend on "
        f"local disk, `{jvm}`)",
        f"- command: `{command}`",
        f"- run: per cell and run a fresh relay (`python -m service run`, "
        f"`RELAY_MAX_IN_FLIGHT={IN_FLIGHT}`, poll watch mode, `RELAY_OUTPUT_URL=s3://{BUCKET}/"
        "<prefix>/` on S3Proxy, unsigned payload as the relay sends it), a fresh fal emulator "
        f"(`--run-time {RUN_TIME_S} --queue-wait 0 --output-bytes {plan.size_text}`: "
        f"{plan.size:,} bytes per output, {total_mb:,.0f} MB a run) and fresh topics; one "
        "Kafka broker and one S3Proxy for all; all on loopback, sharing the cores. "
        f"{runs} run(s) a cell, the order of the cells alternating; median (min-max)",
        f"- ready: after `relay_started` and one warm-up request (a {WARM_UP_BYTES / MiB:g} MiB "
        "output copied and its result read) and 0.5 s; there VmRSS is read and the peak mark "
        "reset (`5` to `/proc/<pid>/clear_refs`). Peak = VmHWM at the end "
        f"(source: {', '.join(sources)}; VmRSS sampled every {SAMPLE_S * 1000:.0f} ms as a "
        "cross-check). RSS growth = peak - ready",
        "- throughput: total bytes / (last result read from the results topic - the first "
        "job's completion at fal, = its `submitted_at` + run time); MB = 10^6 bytes. Relay CPU: "
        "user + system, all threads, from the publish to the last result read",
        "- checked: every result `succeeded` with `video.fal_url`, `video.url` the stored "
        "object and `file_size` the output size; each object's size by HEAD to S3Proxy",
        "",
    ]
    for c in CELLS:
        rows = [o for o in outcomes if o.cell == c.label]
        if not rows:
            continue
        settings = (
            " ".join(f"`{k}={v}`" for k, v in c.settings.items())
            or "`RELAY_OUTPUT_MAX_COPIES=4` `RELAY_OUTPUT_PART_MIB=8` (defaults, not set)"
        )
        growth = [o.growth_mib for o in rows]
        lines += [
            f"## {c.label}",
            "",
            f"Settings: {settings}.",
            "",
            "| figure | median (min-max) |",
            "| --- | ---: |",
            f"| throughput, MB/s | {cell([o.throughput for o in rows], '.0f')} |",
            f"| first completion at fal to last result read, s "
            f"| {cell([o.span_s for o in rows], '.1f')} |",
            f"| publish to last result read, s "
            f"| {cell([o.publish_to_last_s for o in rows], '.1f')} |",
            f"| RSS when ready, MiB | {cell([o.rss_ready_mib for o in rows], '.1f')} |",
            f"| peak RSS, MiB | {cell([o.peak_mib for o in rows], '.1f')} |",
            f"| **RSS growth (peak - ready), MiB** | **{cell(growth, '.1f')}** |",
            f"| within {RSS_BOUND_MIB} MiB | {_within(growth)} |",
            f"| RSS growth over `relay_started` (before the warm-up), MiB "
            f"| {cell([o.growth_since_started_mib for o in rows], '.1f')} |",
            f"| sampled peak VmRSS - ready, MiB "
            f"| {cell([o.sampled_peak_mib - o.rss_ready_mib for o in rows], '.1f')} |",
            f"| RSS after - ready, MiB | {cell([o.retained_mib for o in rows], '.1f')} |",
            f"| relay CPU, s | {cell([o.relay_cpu_s for o in rows], '.1f')} |",
            f"| relay CPU per 100 MB, s | {cell([o.cpu_per_100mb for o in rows], '.3f')} |",
            f"| S3Proxy CPU, s | {cell([o.s3proxy_cpu_s for o in rows], '.1f')} |",
            f"| emulator CPU, s | {cell([o.emulator_cpu_s for o in rows], '.1f')} |",
            f"| copies stored / retried (per run) "
            f"| {'; '.join(f'{o.copies_stored:g} / {o.copies_retried:g}' for o in rows)} |",
            "",
        ]
    warned = [
        f"{event} x{count} ({o.cell}, run {o.run})"
        for o in outcomes
        for event, count in sorted(o.warnings.items())
    ]
    lines += [
        f"Relay warnings during the copies: {', '.join(warned)}."
        if warned
        else "The relay logged no warnings during the copies.",
        "",
        "## Reading",
        "",
        reading(outcomes),
    ]
    return "\n".join(lines) + "\n"


def _within(growth: Sequence[float]) -> str:
    over = sum(g > RSS_BOUND_MIB for g in growth)
    return "yes, every run" if over == 0 else f"no: {over} of {len(growth)} runs over"


def _median(rows: Sequence[Outcome], figure: str) -> float:
    return statistics.median(float(getattr(o, figure)) for o in rows)


def _verdict(rows: Sequence[Outcome]) -> str:
    """``holds, N MiB to spare`` or ``does not hold, over by N MiB``, on the worst run."""
    worst = max(o.growth_mib for o in rows)
    if worst <= RSS_BOUND_MIB:
        return f"holds, {RSS_BOUND_MIB - worst:.1f} MiB to spare on the worst run"
    return f"does not hold, over by {worst - RSS_BOUND_MIB:.1f} MiB on the worst run"


def reading(outcomes: Sequence[Outcome]) -> str:
    by_cell = {c.label: [o for o in outcomes if o.cell == c.label] for c in CELLS}
    default, eight, all_at_once = (by_cell[c.label] for c in CELLS)
    if not default:
        return "No run at the defaults."
    text = (
        f"At the defaults (4 copies at a time, 8 MiB parts) the relay's RSS grew by "
        f"{_median(default, 'growth_mib'):.1f} MiB at the median and "
        f"{max(o.growth_mib for o in default):.1f} MiB at most while "
        f"{default[0].outputs} outputs were copied at once: the {RSS_BOUND_MIB} MiB bound "
        f"{_verdict(default)}; {_median(default, 'throughput'):.0f} MB/s and "
        f"{_median(default, 'cpu_per_100mb'):.3f} s of relay CPU per 100 MB."
    )
    for label, rows in (
        ("8 copies at a time of 5 MiB parts", eight),
        ("all 20 at once", all_at_once),
    ):
        if rows:
            text += (
                f" With {label}: growth {_median(rows, 'growth_mib'):.1f} MiB "
                f"(max {max(o.growth_mib for o in rows):.1f}; the bound {_verdict(rows)}), "
                f"{_median(rows, 'throughput'):.0f} MB/s."
            )
    rates = [_median(r, "throughput") for r in (default, eight, all_at_once) if r]
    relay_cpu = sum(o.relay_cpu_s for o in outcomes)
    server_cpu = sum(o.s3proxy_cpu_s for o in outcomes)
    busy = sum(o.relay_cpu_s + o.s3proxy_cpu_s + o.emulator_cpu_s for o in outcomes) / sum(
        o.publish_to_last_s for o in outcomes
    )
    text += (
        f" Throughput differs little between the cells ({min(rates):.0f}-{max(rates):.0f} MB/s "
        "at the median), so on this machine the bound costs little or no throughput: the limit "
        "is not the number of copies at once but the shared machine (the relay, S3Proxy and the "
        f"emulator kept {busy:.1f} of the {os.cpu_count()} cores busy, Kafka besides; S3Proxy "
        "also writes every part to disk and joins the parts). Over all runs the relay used "
        f"{relay_cpu:.0f} s of CPU and S3Proxy {server_cpu:.0f} s; against a real store the "
        "relay's CPU per 100 MB is the figure that carries over, and MB/s should be measured "
        "there."
    )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 outputs of 20 MiB, 1 run")
    parser.add_argument("--runs", type=int, default=None, help="runs a cell (default 2; quick 1)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"where to write the Markdown (default: {DEFAULT_OUTPUT.relative_to(ROOT)}; "
        "with --quick: nowhere)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    plan = QUICK if quick else FULL
    runs = args.runs or (1 if quick else 2)
    output: Path | None = args.output or (None if quick else DEFAULT_OUTPUT)
    command = "uv run python bench/output_relay.py" + (" --quick" if quick else "")
    if args.runs is not None:
        command += f" --runs {args.runs}"
    drop_proxies()
    commit_at_start = git_commit()
    with kafka_broker() as bootstrap, s3proxy() as server:
        outcomes = asyncio.run(run_all(bootstrap, server, plan, runs))
    write_output(report(outcomes, plan, runs, command, commit_at_start), output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
