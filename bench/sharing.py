"""Sharing one fal account: a tenant behind another's flood, and the cost of a deep backlog.

1. **flood**: tenant A publishes ``--flood`` requests (2,000), the system starts, and once 100
   of A's results are out tenant B publishes 20. The emulator runs 8 jobs at once (the account;
   the rest wait in its queue, as at fal), each ``--run-time`` seconds (0.25). Three systems,
   each with 8 jobs in flight:
   - **lynx-relay** with ``RELAY_FAL_CONCURRENCY=8``: the backlog and the scheduler;
   - **fifo**: lynx-relay with ``RELAY_BACKLOG_MAX_REQUESTS=1``, i.e. the intake of before the
     scheduler (records in partition order, one read ahead);
   - **baseline**: ``bench/baseline.py`` (aiokafka + fal_client + a semaphore).
   Figure: how long B's requests waited, from B's publish to its result read from Kafka (p50,
   p99), and how many of A's results came out meanwhile.
2. **backlog**: 100,000 requests waiting in one relay process (``RELAY_MAX_IN_FLIGHT=1`` and a
   job that runs for an hour): the process's RSS growth over its idle RSS, per request; and
   in-process, the cost of one scheduling decision (``Scheduler.pick`` plus an ``add`` to keep
   the depth) at a depth of 100,000 with 10 tenants and 3 priority classes.

Run (project root)::

    uv run python bench/sharing.py               # both, writes bench/results/sharing.md
    uv run python bench/sharing.py --quick       # smaller sizes, prints only
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

from harness import (
    RESULTS,
    RelayProcess,
    Topics,
    bench_arguments,
    create_topics,
    header_lines,
    kafka_broker,
    metric_samples,
    proc_rss_bytes,
    publish,
    write_output,
)
from run import (
    Context,
    System,
    _quantile,
    collecting,
    running,
    throwaway_tls,
    tls_emulator,
)

from service.core.offsets import Partition
from service.core.scheduler import Priority, Scheduler, Waiting, job_cost

SLOTS = 8
MiB = 1024 * 1024


def tenant_record(tenant: str, i: int) -> tuple[bytes, bytes]:
    rid = f"{tenant}-{i}"
    body = (
        f'{{"request_id": "{rid}", "tenant": "{tenant}", "input": {{"image_url": '
        f'"https://example.com/s.png", "prompt": "bench {rid}: a person carves a pumpkin on a '
        f'porch in the evening, lifts the lid and peeks inside"}}}}'
    )
    return rid.encode(), body.encode()


async def flood(ctx: Context, kind: str, *, flood_size: int, run_time: float) -> dict[str, float]:
    topics = Topics.fresh("bench.sharing", kind)
    await create_topics(ctx.bootstrap, topics, request_partitions=6, other_partitions=3)
    await publish(
        ctx.bootstrap, topics.requests, (tenant_record("a", i) for i in range(flood_size)), 300
    )
    settings = {
        "lynx-relay": {"RELAY_FAL_CONCURRENCY": str(SLOTS), "RELAY_POLL_MIN_INTERVAL_S": "0.1"},
        "fifo": {"RELAY_BACKLOG_MAX_REQUESTS": "1", "RELAY_POLL_MIN_INTERVAL_S": "0.1"},
    }.get(kind)
    system_kind = "baseline" if kind == "baseline" else "lynx-relay"
    with tls_emulator(ctx.tls, run_time, SLOTS) as emulator, tempfile.TemporaryFile() as err:
        system = System(system_kind, ctx, emulator, topics, SLOTS, relay_settings=settings)
        async with (
            collecting(ctx.bootstrap, topics.results) as results,
            running(system, err) as process,
        ):
            await results.wait_for(100, 300, f"{kind}: A's first results")
            b_published = time.time()
            await publish(
                ctx.bootstrap, topics.requests, (tenant_record("b", i) for i in range(20)), 60
            )
            b_ids = [f"b-{i}" for i in range(20)]
            within = 120 + flood_size * run_time / SLOTS * 3
            await results.wait_for_keys(b_ids, within, f"{kind}: B's results")
            await process.terminate()
    waits = sorted(results.received[rid] - b_published for rid in b_ids)
    b_done = max(results.received[rid] for rid in b_ids)
    a_meanwhile = sum(
        1
        for key, at in results.received.items()
        if key.startswith("a-") and b_published < at <= b_done
    )
    return {
        "b_wait_p50_s": _quantile(waits, 50),
        "b_wait_p99_s": _quantile(waits, 99),
        "a_results_meanwhile": float(a_meanwhile),
    }


async def backlog_rss(ctx: Context, *, depth: int) -> dict[str, float]:
    topics = Topics.fresh("bench.sharing", "backlog")
    await create_topics(ctx.bootstrap, topics, request_partitions=6, other_partitions=3)
    tenants = [f"t{k}" for k in range(10)]
    records = (tenant_record(tenants[i % 10], i) for i in range(depth + 1))
    with tls_emulator(ctx.tls, 3600.0, SLOTS) as emulator, tempfile.TemporaryFile() as err:
        system = System("lynx-relay", ctx, emulator, topics, 1, relay_settings={})
        async with running(system, err) as process:
            idle = proc_rss_bytes(process.pid) or 0
            started = time.monotonic()
            await publish(ctx.bootstrap, topics.requests, records, 600)

            def waiting() -> float:
                assert isinstance(process, RelayProcess)
                samples = metric_samples(process.metrics_text(), "lynx_relay_tenant_waiting")
                return sum(value for _name, _labels, value in samples)

            while waiting() < depth:
                if time.monotonic() - started > 600:
                    raise RuntimeError(f"backlog: {waiting():.0f} of {depth} after 600 s")
                await asyncio.sleep(1.0)  # a benchmark's sampling interval
            filled = time.monotonic() - started
            full = proc_rss_bytes(process.pid) or 0
            await process.terminate()
    return {
        "rss_growth_mib": (full - idle) / MiB,
        "bytes_per_request": (full - idle) / depth,
        "fill_s": filled,
    }


def decision_cost(depth: int, decisions: int = 20_000) -> dict[str, float]:
    """Microseconds per decision (a pick, and an add that keeps the depth), in this process;
    the requests added are made before the clock starts."""
    rng = random.Random(1)
    weights = {f"t{k}": float(1 + k % 3) for k in range(10)}
    scheduler = Scheduler(weights, aging=300.0)
    sizes = [job_cost(f, fps) for f in (17, 33, 49, 65, 81) for fps in (16, 24)]
    part = Partition("requests", 0)
    tenants = list(weights)

    def item(i: int, since: float) -> Waiting:
        return Waiting(
            part,
            i,
            f"req-{i}",
            rng.choice(tenants),
            Priority(rng.randrange(3)),
            rng.choice(sizes),
            since,
        )

    for i in range(depth):
        scheduler.add(item(i, 0.0))
    more = [item(depth + i, 1.0 + i * 0.001) for i in range(decisions)]
    samples = []
    for batch in range(decisions // 1000):
        chunk = more[batch * 1000 : (batch + 1) * 1000]
        t0 = time.perf_counter_ns()
        for new in chunk:
            picked = scheduler.pick(new.since)
            assert picked is not None
            scheduler.add(new)
        samples.append((time.perf_counter_ns() - t0) / 1000 / 1000)
    return {"decision_us_median": statistics.median(samples), "decision_us_max": max(samples)}


def main(argv: Sequence[str] | None = None) -> int:
    quick, output = bench_arguments(__doc__, "smaller sizes", RESULTS / "sharing.md", argv)
    flood_size, run_time, depth = (400, 0.1, 10_000) if quick else (2000, 0.25, 100_000)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    cost = decision_cost(depth)
    with throwaway_tls() as tls, kafka_broker() as bootstrap:
        ctx = Context(bootstrap, tls)

        async def measure() -> tuple[dict[str, dict[str, float]], dict[str, float]]:
            floods = {
                kind: await flood(ctx, kind, flood_size=flood_size, run_time=run_time)
                for kind in ("lynx-relay", "fifo", "baseline")
            }
            return floods, await backlog_rss(ctx, depth=depth)

        floods, rss = asyncio.run(measure())
    lines = [
        "# Sharing one fal account",
        "",
        *header_lines(),
        f"- sizes: flood {flood_size} of A's then 20 of B's, jobs {run_time:g} s, {SLOTS} "
        f"slots; backlog depth {depth:,}" + (" (QUICK)" if quick else ""),
        "",
        "| flood | B wait p50 (s) | B wait p99 (s) | A's results meanwhile |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {kind} | {r['b_wait_p50_s']:.2f} | {r['b_wait_p99_s']:.2f} | "
            f"{r['a_results_meanwhile']:.0f} |"
            for kind, r in floods.items()
        ),
        "",
        "| backlog | value |",
        "| --- | ---: |",
        f"| RSS growth with {depth:,} waiting | {rss['rss_growth_mib']:.1f} MiB |",
        f"| per waiting request | {rss['bytes_per_request']:.0f} bytes |",
        f"| time to fill | {rss['fill_s']:.0f} s |",
        f"| one scheduling decision at depth {depth:,}, median of 1,000-decision batches "
        f"| {cost['decision_us_median']:.2f} µs |",
        f"| ... slowest batch | {cost['decision_us_max']:.2f} µs |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_output(text, None if quick else output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
