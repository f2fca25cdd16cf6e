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
- per run a fresh fal queue emulator (``python -m fal_emulator serve --run-time 0.2-0.5``) and a
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

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from harness import (
    PUBLISH_S,
    ROOT,
    Emulator,
    RelayProcess,
    Topics,
    bench_arguments,
    cell,
    create_topics,
    emulator_process,
    header_lines,
    http_get,
    kafka_broker,
    metric_samples,
    publish,
    relay_env,
    request_record,
    write_output,
)

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "ledger-window.md"
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

# Waiting for N submissions: far more than the ~0.6 s a job takes at 8 in flight.
SUBMIT_S_PER_JOB = 0.5
SUBMIT_MIN_S = 120.0
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


class Relay(RelayProcess):
    """``python -m service run``, collecting the first N ``job_submitted`` lines."""

    def __init__(self, env: dict[str, str], jobs: int) -> None:
        super().__init__(env)
        self.jobs = jobs  # how many job_submitted lines to collect
        self.submitted: list[dict[str, Any]] = []
        self.seen_n_at: float | None = None  # time.monotonic() when the N-th line was read

    def on_line(self, line: dict[str, Any]) -> None:
        super().on_line(line)
        if line.get("event") == "job_submitted":
            self.submitted.append(line)
            if len(self.submitted) == self.jobs:
                self.seen_n_at = time.monotonic()

    async def wait_submitted(self, within: float) -> None:
        await self.until(
            lambda: len(self.submitted) >= self.jobs, within, f"{self.jobs} job_submitted lines"
        )


def ledger_env(
    bootstrap: str, emulator: Emulator, topics: Topics, in_flight: int
) -> dict[str, str]:
    # Nothing inherited may change the relay's settings (or send it through a proxy).
    return relay_env(
        bootstrap,
        emulator.base_url,
        topics,
        in_flight=in_flight,
        jobs_partitions=JOBS_TOPIC_PARTITIONS,
        extra={"RELAY_POLL_MIN_INTERVAL_S": "0.05", "RELAY_POLL_MAX_INTERVAL_S": "0.25"},
    )


# --- one run ------------------------------------------------------------------------------------


async def publish_requests(bootstrap: str, topic: str, jobs: int) -> None:
    await publish(bootstrap, topic, (request_record(f"w-{i}") for i in range(jobs)), PUBLISH_S)


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
    text = http_get(f"http://127.0.0.1:{port}/metrics").decode()
    found: dict[str, float] = {
        name: value
        for name, _labels, value in metric_samples(text, METRIC)
        if name in (f"{METRIC}_count", f"{METRIC}_sum")
    }
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
    topics = Topics.fresh("bench.ledger-window", f"f{in_flight}")
    await create_topics(
        bootstrap,
        topics,
        request_partitions=REQUEST_PARTITIONS,
        other_partitions=OTHER_PARTITIONS,
    )
    with (
        emulator_process(["--run-time", EMULATOR_RUN_TIME]) as emulator,
        tempfile.TemporaryFile() as stderr,
    ):
        relay = Relay(ledger_env(bootstrap, emulator, topics, in_flight), jobs)
        try:
            await relay.start(stderr)
            started_at = time.monotonic()
            await publish_requests(bootstrap, topics.requests, jobs)
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
        *header_lines(),
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
            f"| {cell([s.quantile(50) for s in samples], '.2f')} "
            f"| {cell([s.quantile(90) for s in samples], '.2f')} "
            f"| {cell([s.quantile(99) for s in samples], '.2f')} "
            f"| {cell([max(s.windows_ms) for s in samples], '.2f')} "
            f"| {cell([s.rate for s in samples], '.1f')} "
            f"| {cell([s.exposure for s in samples], '.4f')} "
            f"| {cell([s.exposure * PRICE_PER_VIDEO_USD for s in samples], '.2f')} |"
        )
    lines += ["", reading(results, plan)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    quick, output = bench_arguments(
        __doc__, "50 requests, 1 repetition (smoke run)", DEFAULT_OUTPUT, argv
    )
    plan = QUICK if quick else FULL
    command = "uv run python bench/ledger_window.py" + (" --quick" if quick else "")

    with kafka_broker() as bootstrap:
        results = asyncio.run(run_all(bootstrap, plan))
    write_output(report(results, plan, quick, command), output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
