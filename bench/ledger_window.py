"""How long the duplicate-submission window stays open, and what a crash in it costs.

When fal accepts a job the relay writes a "submitted" entry to its Kafka ledger topic (in a Kafka
transaction) before anything else. Between fal's answer and the ledger's acknowledgement lies the
only window in which a crash can still cause a second, paid, submission: the relay logs its length
as ``ledger_write_ms`` on each ``job_submitted`` line (and exports it as the histogram
``lynx_relay_ledger_write_seconds``). This script measures it end to end, with every part a real
process on loopback:

- its own single-node Kafka broker (``scripts/kafka start`` in a temporary folder), and per run
  fresh topics: requests (6 partitions), results and dead letters (replication 1), and the ledger
  topic, which the relay creates (3 partitions);
- per run a fresh fal queue emulator (``python -m service emulator --run-time 0.2-0.5``) and a
  fresh relay (``python -m service run``) configured through its environment, polling fal every
  0.05-0.25 s, with ``RELAY_MAX_IN_FLIGHT`` 8 or 64;
- N valid requests are published once the relay logged ``relay_started``; the ``ledger_write_ms``
  of the first N ``job_submitted`` lines are collected; then the relay gets SIGTERM (and must exit
  0). Before that, three checks: every request was submitted exactly once (log lines and the
  emulator's submission count), and the relay's ``/metrics`` histogram holds the same N windows.

Reported per in-flight setting: p50 / p90 / p99 / max of the window, the submission rate, and the
**exposure**: the sum of the windows over the jobs divided by the run's span (from fal accepting
the first job to the ledger acknowledging the last one, both from the relay's own log timestamps).
That is the average number of jobs inside the window at a random instant, so the expected number of
duplicate submissions that a ``kill -9`` at a random moment would cause; times $3 (a default
81-frame Lynx video, 5.06 s at $0.60 per second of video) it is the expected cost of such a crash.

Run (from the project root)::

    uv run python bench/ledger_window.py           # 1,000 jobs a run, 3 repetitions: ~3 min
    uv run python bench/ledger_window.py --quick   # 50 jobs, 1 repetition: a smoke run

The full run writes ``bench/results/ledger-window.md``; ``--quick`` writes only with ``--output``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "ledger-window.md"
KAFKA_SCRIPT = ROOT / "scripts" / "kafka"
IN_FLIGHT = (8, 64)
EMULATOR_RUN_TIME = "0.2-0.5"
REQUEST_PARTITIONS = 6
OTHER_PARTITIONS = 3
JOBS_TOPIC_PARTITIONS = 3
# A default Lynx video: 81 frames at 16 fps = 5.06 s of video, at $0.60 per second of video.
PRICE_PER_VIDEO_USD = 3.0
# For the reading only: exposure if each in-flight slot turned over once a minute instead.
EXAMPLE_CYCLE_S = 60.0
METRIC = "lynx_relay_ledger_write_seconds"

KAFKA_START_S = 600.0  # the first start on a machine fetches Kafka's jars with Maven
KAFKA_STOP_S = 120.0
EMULATOR_START_S = 20.0
EMULATOR_STOP_S = 10.0
RELAY_START_S = 90.0
RELAY_STOP_S = 60.0
PUBLISH_S = 60.0
# Waiting for N submissions: far more than the ~0.6 s a job takes at 8 in flight.
SUBMIT_S_PER_JOB = 0.5
SUBMIT_MIN_S = 120.0
HTTP_S = 5.0
LOG_TAIL = 30
# The relay logs the window rounded to 0.01 ms; the histogram holds it unrounded.
ROUNDING_S = 0.005e-3


@dataclass(frozen=True, slots=True)
class Plan:
    jobs: int  # requests published, and submissions measured, per run
    repetitions: int


FULL = Plan(jobs=1000, repetitions=3)
QUICK = Plan(jobs=50, repetitions=1)


@dataclass(frozen=True, slots=True)
class Sample:
    """One run: N windows and the span over which they happened."""

    windows_ms: tuple[float, ...]
    span_s: float  # from fal accepting the first job to the ledger acknowledging the last one
    wall_s: float  # this script's view: first request published to N-th job_submitted read

    def quantile(self, q: int) -> float:
        """The q-th percentile (1-99), linear interpolation between the closest ranks."""
        return statistics.quantiles(self.windows_ms, n=100, method="inclusive")[q - 1]

    @property
    def exposure(self) -> float:
        """Average number of jobs inside the window at a random instant of the span."""
        return sum(self.windows_ms) / 1000 / self.span_s

    @property
    def rate(self) -> float:
        return len(self.windows_ms) / self.span_s


@dataclass(frozen=True, slots=True)
class Topics:
    requests: str
    results: str
    dead_letters: str
    jobs: str
    group: str

    @classmethod
    def fresh(cls, label: str) -> Topics:
        base = f"bench.ledger-window.{label}.{uuid.uuid4().hex[:8]}"
        return cls(
            requests=f"{base}.requests",
            results=f"{base}.results",
            dead_letters=f"{base}.dlq",
            jobs=f"{base}.jobs",
            group=f"{base}.group",
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _http_get(url: str) -> bytes:
    # An opener without proxies: this must reach the loopback port, whatever the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=HTTP_S) as response:
        body: bytes = response.read()
        return body


# --- the broker ---------------------------------------------------------------------------------


@contextlib.contextmanager
def kafka_broker() -> Iterator[str]:
    """A private single-node broker in a temporary folder; stopped (and removed) afterwards."""
    with tempfile.TemporaryDirectory(prefix="lynx-bench-kafka-") as folder:
        port = str(_free_port())
        command = [str(KAFKA_SCRIPT), "start", "--port", port, "--dir", folder]
        try:
            print(f"starting Kafka on 127.0.0.1:{port} ...", file=sys.stderr)
            started = subprocess.run(
                command,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=KAFKA_START_S,
                check=False,
            )
            if started.returncode != 0:
                raise RuntimeError(f"could not start Kafka:\n{started.stderr[-3000:]}")
            yield started.stdout.strip().splitlines()[-1]
        finally:
            # Also after a start that timed out: the broker runs in its own session.
            stopped = subprocess.run(
                [str(KAFKA_SCRIPT), "stop", "--port", port, "--dir", folder],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=KAFKA_STOP_S,
                check=False,
            )
            if stopped.returncode != 0:
                print(f"warning: kafka stop failed:\n{stopped.stderr[-2000:]}", file=sys.stderr)


async def create_topics(bootstrap: str, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(topics.requests, num_partitions=REQUEST_PARTITIONS, replication_factor=1),
                NewTopic(topics.results, num_partitions=OTHER_PARTITIONS, replication_factor=1),
                NewTopic(
                    topics.dead_letters, num_partitions=OTHER_PARTITIONS, replication_factor=1
                ),
            ]
        )
    finally:
        await admin.close()


# --- the emulator process -----------------------------------------------------------------------


class Emulator:
    """The emulator as a child process on 127.0.0.1."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}"
        self._log = log

    def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(_http_get(f"{self.base_url}/_emulator/stats"))
        return body

    def log_text(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]


@contextlib.contextmanager
def emulator_process() -> Iterator[Emulator]:
    """Start the emulator, wait until it answers, and stop it with SIGTERM (then SIGKILL)."""
    with tempfile.TemporaryFile() as log:
        emulator = _start_emulator(log)
        try:
            yield emulator
        finally:
            _stop_emulator(emulator)


def _start_emulator(log: IO[bytes]) -> Emulator:
    # The free port may be taken between our probe and the emulator's bind: try a few.
    for _ in range(3):
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "service",
            "emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--run-time",
            EMULATOR_RUN_TIME,
            "--log-level",
            "warning",
        ]
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        emulator = Emulator(process, port, log)
        deadline = time.monotonic() + EMULATOR_START_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                emulator.stats()
            except (OSError, urllib.error.URLError, ValueError):
                time.sleep(0.05)
            else:
                return emulator
        if process.poll() is None:
            _stop_emulator(emulator)
            raise RuntimeError(f"the emulator did not answer in {EMULATOR_START_S:.0f} s")
    raise RuntimeError(f"the emulator exited at start:\n{emulator.log_text()}")


def _stop_emulator(emulator: Emulator) -> None:
    process = emulator.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=EMULATOR_STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=EMULATOR_STOP_S)
            print("warning: the emulator ignored SIGTERM and was killed", file=sys.stderr)
    if process.returncode not in (0, -signal.SIGTERM):
        print(
            f"warning: the emulator exited with {process.returncode}:\n{emulator.log_text()}",
            file=sys.stderr,
        )


# --- the relay process --------------------------------------------------------------------------


@dataclass(slots=True)
class Relay:
    """``python -m service run`` as a child process whose JSON log lines are read as they come."""

    env: dict[str, str]
    jobs: int  # how many job_submitted lines to collect
    process: asyncio.subprocess.Process | None = None
    submitted: list[dict[str, Any]] = field(default_factory=list)
    started: dict[str, Any] | None = None
    tail: list[str] = field(default_factory=list)
    seen_n_at: float | None = None  # time.monotonic() when the N-th job_submitted was read
    _reader: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _stderr: IO[bytes] | None = None

    async def start(self, stderr: IO[bytes]) -> None:
        self._stderr = stderr
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "run",
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        self._reader = asyncio.create_task(self._read())
        await self._until(lambda: self.started is not None, RELAY_START_S, "relay_started")

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        # Read to the end, also after the N-th line: a full pipe would stall the relay.
        while raw := await self.process.stdout.readline():
            text = raw.decode(errors="replace").rstrip("\n")
            self.tail = [*self.tail[-(LOG_TAIL - 1) :], text]
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if not isinstance(line, dict):
                continue
            event = line.get("event")
            if event == "relay_started":
                self.started = line
            elif event == "job_submitted":
                self.submitted.append(line)
                if len(self.submitted) == self.jobs:
                    self.seen_n_at = time.monotonic()
            self._changed.set()
        self._changed.set()

    async def _until(self, done: Callable[[], bool], within: float, what: str) -> None:
        try:
            async with asyncio.timeout(within):
                while not done():
                    if self._reader is not None and self._reader.done():
                        raise RuntimeError(f"the relay exited before {what}\n{self.diagnostics()}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise RuntimeError(f"no {what} within {within:.0f} s\n{self.diagnostics()}") from None

    async def wait_submitted(self, within: float) -> None:
        await self._until(
            lambda: len(self.submitted) >= self.jobs, within, f"{self.jobs} job_submitted lines"
        )

    async def terminate(self) -> int:
        """SIGTERM, then wait for the exit and the end of its output."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(RELAY_STOP_S):
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
        return code

    async def close(self) -> None:
        """Whatever happened before: the process is gone afterwards."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    def diagnostics(self) -> str:
        err = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")[-2000:]
        return "last stdout lines:\n" + "\n".join(self.tail) + f"\nstderr:\n{err}"


def relay_env(bootstrap: str, emulator: Emulator, topics: Topics, in_flight: int) -> dict[str, str]:
    # Nothing inherited may change the relay's settings (or send it through a proxy).
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RELAY_", "KAFKA_", "FAL_")) and not k.lower().endswith("_proxy")
    }
    return {
        **inherited,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "FAL_QUEUE_URL": emulator.base_url,
        "RELAY_REQUESTS_TOPIC": topics.requests,
        "RELAY_RESULTS_TOPIC": topics.results,
        "RELAY_DEAD_LETTER_TOPIC": topics.dead_letters,
        "RELAY_GROUP_ID": topics.group,
        "RELAY_JOBS_TOPIC": topics.jobs,
        "RELAY_JOBS_TOPIC_PARTITIONS": str(JOBS_TOPIC_PARTITIONS),
        "RELAY_HTTP_HOST": "127.0.0.1",
        "RELAY_HTTP_PORT": str(_free_port()),
        "RELAY_MAX_IN_FLIGHT": str(in_flight),
        "RELAY_POLL_MIN_INTERVAL_S": "0.05",
        "RELAY_POLL_MAX_INTERVAL_S": "0.25",
    }


# --- one run ------------------------------------------------------------------------------------


async def publish(bootstrap: str, topic: str, jobs: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        async with asyncio.timeout(PUBLISH_S):
            sent = []
            for i in range(jobs):
                rid = f"w-{i}"
                request = {
                    "request_id": rid,
                    "input": {"image_url": "https://example.com/s.png", "prompt": "bench"},
                }
                value = json.dumps(request).encode()
                sent.append(await producer.send(topic, value, key=rid.encode()))
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _ts(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["ts"])).timestamp()


def check_and_sample(relay: Relay, emulator: Emulator, jobs: int, started_at: float) -> Sample:
    """Every request submitted once, the histogram agrees with the log; the run's numbers."""
    lines = relay.submitted[:jobs]
    ids = [str(line["request_id"]) for line in lines]
    expected = {f"w-{i}" for i in range(jobs)}
    if len(set(ids)) != jobs or set(ids) != expected:
        raise RuntimeError(f"job_submitted lines do not name each request once: {sorted(ids)[:10]}")
    submissions = emulator.stats()["submissions"]
    if submissions != jobs:
        raise RuntimeError(f"the emulator saw {submissions} submissions for {jobs} requests")
    windows_ms = tuple(float(line["ledger_write_ms"]) for line in lines)

    assert relay.started is not None
    port = relay.started["http_port"]
    text = _http_get(f"http://127.0.0.1:{port}/metrics").decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == METRIC:
            for s in family.samples:
                if s.name in (f"{METRIC}_count", f"{METRIC}_sum"):
                    found[s.name] = s.value
    count, total = found.get(f"{METRIC}_count"), found.get(f"{METRIC}_sum")
    logged = sum(windows_ms) / 1000
    if count != jobs or total is None or abs(total - logged) > jobs * ROUNDING_S + 1e-6:
        raise RuntimeError(
            f"/metrics {METRIC}: count {count}, sum {total}; the log: {jobs} jobs, sum {logged}"
        )

    # The span, by the relay's own clock: first acceptance (log time minus its window) to last ack.
    accepted = min(_ts(line) - float(line["ledger_write_ms"]) / 1000 for line in lines)
    acknowledged = max(_ts(line) for line in lines)
    assert relay.seen_n_at is not None
    return Sample(windows_ms, acknowledged - accepted, relay.seen_n_at - started_at)


async def run_once(bootstrap: str, in_flight: int, jobs: int) -> Sample:
    topics = Topics.fresh(f"f{in_flight}")
    await create_topics(bootstrap, topics)
    with emulator_process() as emulator, tempfile.TemporaryFile() as stderr:
        relay = Relay(relay_env(bootstrap, emulator, topics, in_flight), jobs)
        try:
            await relay.start(stderr)
            started_at = time.monotonic()
            await publish(bootstrap, topics.requests, jobs)
            await relay.wait_submitted(max(SUBMIT_MIN_S, jobs * SUBMIT_S_PER_JOB))
            sample = check_and_sample(relay, emulator, jobs, started_at)
            code = await relay.terminate()
            if code != 0:
                raise RuntimeError(f"the relay exited {code} on SIGTERM\n{relay.diagnostics()}")
            return sample
        finally:
            await relay.close()


Results = dict[int, list[Sample]]  # in-flight setting -> one sample a repetition


async def run_all(bootstrap: str, plan: Plan) -> Results:
    results: Results = {}
    for rep in range(plan.repetitions):
        # Alternate the order so that drift in the machine's speed does not favour one setting.
        order = IN_FLIGHT if rep % 2 == 0 else IN_FLIGHT[::-1]
        for in_flight in order:
            sample = await run_once(bootstrap, in_flight, plan.jobs)
            results.setdefault(in_flight, []).append(sample)
            print(
                f"  repetition {rep + 1}/{plan.repetitions}, in flight {in_flight}: "
                f"p50 {sample.quantile(50):.2f} ms, exposure {sample.exposure:.4f}, "
                f"{sample.wall_s:.1f} s",
                file=sys.stderr,
            )
    return results


# --- the report ---------------------------------------------------------------------------------


def _cell(values: Sequence[float], fmt: str) -> str:
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def _git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} (with uncommitted changes)" if dirty else commit


def _median(samples: Sequence[Sample], what: str) -> float:
    values = {
        "p50": [s.quantile(50) for s in samples],
        "p99": [s.quantile(99) for s in samples],
        "mean": [statistics.fmean(s.windows_ms) for s in samples],
        "rate": [s.rate for s in samples],
        "exposure": [s.exposure for s in samples],
    }[what]
    return statistics.median(values)


def reading(results: Results, plan: Plan) -> str:
    """One plain paragraph, from the medians."""
    parts = []
    for in_flight in IN_FLIGHT:
        samples = results[in_flight]
        exposure = _median(samples, "exposure")
        parts.append(
            f"at RELAY_MAX_IN_FLIGHT={in_flight} the window's median was "
            f"{_median(samples, 'p50'):.0f} ms (p99 {_median(samples, 'p99'):.0f} ms) at "
            f"{_median(samples, 'rate'):.0f} submissions/s, so {exposure:.2f} jobs were in it on "
            f"average: a kill -9 at a random moment would cost {exposure:.2f} duplicate "
            f"submissions, about ${exposure * PRICE_PER_VIDEO_USD:.2f}"
        )
    cycles = ", ".join(
        f"{in_flight / _median(results[in_flight], 'rate'):.2f} s at {in_flight}"
        for in_flight in IN_FLIGHT
    )
    slow = {
        in_flight: in_flight * _median(results[in_flight], "mean") / 1000 / EXAMPLE_CYCLE_S
        for in_flight in IN_FLIGHT
    }
    per_minute = ", ".join(
        f"{jobs:.3f} jobs (${jobs * PRICE_PER_VIDEO_USD:.2f}) at {in_flight}"
        for in_flight, jobs in slow.items()
    )
    text = (
        "The window is the round trip of one Kafka transaction (ledger writes that arrive "
        "together share one) on a single-node broker on loopback; "
        + "; ".join(parts)
        + ". Exposure is the submission rate times the mean window (Little's law), and the rate "
        "here comes from the emulator's short jobs: each in-flight slot turned over every "
        f"{cycles}. Real Lynx jobs take much longer, and exposure falls in proportion: per slot it "
        f"is the mean window divided by the job's cycle, so with a {EXAMPLE_CYCLE_S:.0f} s cycle "
        f"(and this window) it would be {per_minute}. A production broker (replication 3, real "
        "network) has a longer transaction than this loopback one, which raises the window and "
        "the exposure with it; only an abrupt kill costs anything, as SIGTERM lets the write "
        "finish."
    )
    if plan.jobs <= max(IN_FLIGHT):
        text = (
            f"Smoke run: {plan.jobs} jobs do not fill {max(IN_FLIGHT)} slots even once, so the "
            "rates and exposures are not a steady state. " + text
        )
    return text


def report(results: Results, plan: Plan, quick: bool, command: str) -> str:
    lines = [
        "# Ledger window: how many paid duplicates a kill -9 would cost",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; commit: {_git_commit()}",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()}; "
        f"Python {platform.python_version()}",
        f"- reproduce: `{command}`",
        f"- run: {'--quick, ' if quick else ''}{plan.jobs} requests per run, "
        f"{plan.repetitions} repetition(s) per setting; one single-node Kafka on loopback; per "
        f"run fresh topics (requests: {REQUEST_PARTITIONS} partitions, ledger: "
        f"{JOBS_TOPIC_PARTITIONS}), a fresh emulator (`--run-time {EMULATOR_RUN_TIME}`) and a "
        "fresh relay (polls 0.05-0.25 s); broker, emulator, relay and this script share the cores",
        "- window: `ledger_write_ms` of each `job_submitted` line (fal's answer to the ledger's "
        "acknowledgement); checked against the `/metrics` histogram and the emulator's "
        "submission count (each request submitted exactly once)",
        "- exposure: sum of the windows / span (fal accepting the first job to the ledger "
        "acknowledging the last, by the relay's log clock) = mean number of jobs in the window "
        f"at a random instant; $ = exposure x ${PRICE_PER_VIDEO_USD:.2f} (81 frames, 5.06 s of "
        "video at $0.60/s)",
        "- cells: median (min-max) over the repetitions; percentiles within a run interpolate",
        "",
        "| in flight | p50 ms | p90 ms | p99 ms | max ms | submissions/s | exposure (jobs) "
        "| $ per random kill -9 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for in_flight in IN_FLIGHT:
        samples = results[in_flight]
        lines.append(
            f"| {in_flight} "
            f"| {_cell([s.quantile(50) for s in samples], '.2f')} "
            f"| {_cell([s.quantile(90) for s in samples], '.2f')} "
            f"| {_cell([s.quantile(99) for s in samples], '.2f')} "
            f"| {_cell([max(s.windows_ms) for s in samples], '.2f')} "
            f"| {_cell([s.rate for s in samples], '.1f')} "
            f"| {_cell([s.exposure for s in samples], '.4f')} "
            f"| {_cell([s.exposure * PRICE_PER_VIDEO_USD for s in samples], '.2f')} |"
        )
    lines += ["", reading(results, plan)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="50 requests, 1 repetition (smoke run)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"where to write the Markdown (default: {DEFAULT_OUTPUT.relative_to(ROOT)}; "
        "with --quick: nowhere)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    output: Path | None = args.output or (None if args.quick else DEFAULT_OUTPUT)
    command = "uv run python bench/ledger_window.py" + (" --quick" if args.quick else "")

    with kafka_broker() as bootstrap:
        results = asyncio.run(run_all(bootstrap, plan))
    text = report(results, plan, args.quick, command)
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
