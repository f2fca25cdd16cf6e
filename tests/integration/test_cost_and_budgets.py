"""What each video costs and the budgets that hold (issue 14's acceptance), on real Kafka and
the fal emulator.

The emulator is the invoice: it bills each job once when it ends (``billed_units`` and
``billed_amount`` per job, ``billing`` in its stats) and serves the account's unit price, set
here to 0.5 USD so that the relay's fallback (0.60) cannot pass for it. Every prompt starts
with its tenant (``"<tenant>: ..."``), so the emulator's job list says whose each job was.

Nothing here waits on a sleep: results are awaited on the results topic; where the relay says
nothing on a topic (a request held by a budget), the emulator's stats or the relay's /metrics
are polled with a bounded timeout (``until``).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fal_emulator.config import EmulatorConfig
from fal_emulator.server import FalEmulator
from tests.integration.conftest import (
    Topics,
    consume,
    consume_all,
    emulator_running,
    events,
    produce,
    relay_running,
    relay_settings,
    request,
)
from tests.integration.processes import RelayProcess, relay_env

pytestmark = pytest.mark.kafka

PRICE = 0.5  # the account's price at the emulator; the relay's fallback is 0.60
DEFAULT_UNITS = 81 / 16  # fal's defaults: 5.0625 seconds of video
DEFAULT_COST = DEFAULT_UNITS * PRICE  # 2.53125
# The relay rounds an amount to the micro-dollar (service.core.cost); units are exact.
MICRO = 1e-6


# --- helpers -------------------------------------------------------------------------------


def tenant_request(tenant: str, name: str, **fields: Any) -> bytes:
    """A request of ``tenant`` whose prompt names the tenant (for the emulator's job list)."""
    return request(name, f"{tenant}: video {name}", tenant=tenant, **fields)


def tenant_of_job(job: dict[str, Any]) -> str:
    return str(job["input"]["prompt"]).split(":", 1)[0]


def jobs_of(fal: FalEmulator, tenant: str) -> list[dict[str, Any]]:
    """The emulator's jobs (every submit it received) of ``tenant``."""
    return [j for j in fal.stats(include_jobs=True)["jobs"] if tenant_of_job(j) == tenant]


def write_tenants(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


async def scrape(port: int | None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A relay's /metrics as {(sample name, labels): value}."""
    assert port is not None
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def per_tenant(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str
) -> dict[str, float]:
    return {
        dict(labels)["tenant"]: value
        for (sample, labels), value in samples.items()
        if sample == name and value
    }


async def until(
    check: Callable[[], Awaitable[bool]], what: Callable[[], str], within: float = 20
) -> None:
    """Poll ``check`` every 0.1 s until it holds; fails with ``what()`` after ``within`` s.
    For states the relay announces on no topic (held requests, gauges)."""
    try:
        async with asyncio.timeout(within):
            while not await check():  # noqa: ASYNC110 - nothing to await: a state, no event
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what()}") from None


async def results(topics: Topics) -> dict[str, dict[str, Any]]:
    """Every result event on the results topic so far, by request_id (one each)."""
    return events(await consume_all(topics.bootstrap, topics.results))


def jobs_allowed(budget: float, cost: float) -> int:
    """Jobs one replica starts under ``budget`` when each costs ``cost`` (as expected): one
    more may start while what is spent and in flight is below the budget."""
    return math.ceil(budget / cost)


# --- 1. cost per request ----------------------------------------------------------------------

# (num_frames, frames_per_second): units are frames / fps; None leaves fal's default.
SHAPES: list[tuple[int | None, int | None]] = [
    (None, None),  # 5.0625
    (33, 24),  # 1.375
    (49, 16),  # 3.0625
    (81, 30),  # 2.7
    (17, 8),  # 2.125
    (65, 5),  # 13.0
    (9, 12),  # 0.75
    (50, 7),  # 7.142857...: the amount is rounded to the micro-dollar
]
REFUSED_UNITS = 0.75  # what the emulator bills a refused input (its 422)


async def test_result_events_and_metrics_carry_exactly_what_fal_billed(
    topics: Topics, tmp_path: Path
) -> None:
    """30 requests of 3 tenants in 8 sizes, and 3 the model refuses with a billed 422 (an
    input its schema accepts: ``[emulator:refuse-input]``), at fal's unit price of 0.5: each
    event's cost is its fal job's bill (units exact, amount to the micro-dollar, not
    estimated, at 0.5 not the 0.60 fallback); the spend and units per tenant in /metrics are
    the emulator's bill per tenant, and together its whole bill."""
    tenants = ("alpha", "beta", "gamma")
    values: list[bytes] = []
    for t, tenant in enumerate(tenants):
        for i in range(10):
            frames, fps = SHAPES[(i + t) % len(SHAPES)]
            lynx: dict[str, Any] = {
                "image_url": "https://example.com/subject.png",
                "prompt": f"{tenant}: video {tenant}-{i}",
            }
            if frames is not None:
                lynx["num_frames"] = frames
            if fps is not None:
                lynx["frames_per_second"] = fps
            values.append(request(f"{tenant}-{i}", tenant=tenant, input=lynx))
        refused = {
            "image_url": "https://example.com/subject.png",
            "prompt": f"{tenant}: refused [emulator:refuse-input]",
        }
        values.append(request(f"{tenant}-refused", tenant=tenant, input=refused))
    file = write_tenants(
        tmp_path / "tenants.yaml", "tenants:\n  alpha: {}\n  beta: {}\n  gamma: {}\n"
    )
    config = EmulatorConfig(
        run_time=(0.05, 0.2), seed=141, unit_price=PRICE, bill_user_errors=REFUSED_UNITS
    )
    async with emulator_running(config) as fal:
        settings = relay_settings(topics, fal.base_url, RELAY_TENANTS_FILE=file)
        async with relay_running(settings) as relay:
            await produce(topics.bootstrap, topics.requests, values)
            got = events(await consume(topics.bootstrap, topics.results, len(values)))
            bill = fal.stats()["billing"]

            async def spend_counted() -> bool:
                spent = per_tenant(
                    await scrape(relay.ops_port), "lynx_relay_tenant_spend_dollars_total"
                )
                return math.isclose(sum(spent.values()), bill["amount_total"], abs_tol=1e-4)

            # The counters move right after the event's transaction: a moment later, at most.
            await until(spend_counted, lambda: f"spend in /metrics short of {bill}", within=10)
            samples = await scrape(relay.ops_port)
        jobs = {j["request_id"]: j for j in fal.stats(include_jobs=True)["jobs"]}

    assert len(got) == len(values) == 33
    assert len(jobs) == 33  # one fal job each, nothing submitted twice
    statuses = Counter(e["status"] for e in got.values())
    assert statuses == {"succeeded": 30, "failed": 3}
    for rid, event in got.items():
        job = jobs[event["fal_request_id"]]
        cost = event["cost"]
        assert cost is not None, rid
        assert cost["units"] == job["billed_units"], rid
        assert cost["amount"] == pytest.approx(job["billed_amount"], abs=MICRO), rid
        assert (cost["unit"], cost["unit_price"], cost["currency"]) == ("second", PRICE, "USD")
        assert cost["estimated"] is False, rid
        if rid.endswith("-refused"):
            assert event["error"]["code"] == "fal_rejected", event
            assert cost["units"] == REFUSED_UNITS

    fal_bill: defaultdict[str, float] = defaultdict(float)
    fal_units: defaultdict[str, float] = defaultdict(float)
    for job in jobs.values():
        fal_bill[tenant_of_job(job)] += job["billed_amount"]
        fal_units[tenant_of_job(job)] += job["billed_units"]
    spend = per_tenant(samples, "lynx_relay_tenant_spend_dollars_total")
    units = per_tenant(samples, "lynx_relay_tenant_billed_units_total")
    assert set(spend) == set(units) == set(tenants)
    for tenant in tenants:
        # 11 amounts each rounded to the micro-dollar.
        assert spend[tenant] == pytest.approx(fal_bill[tenant], abs=11 * MICRO), tenant
        assert units[tenant] == pytest.approx(fal_units[tenant], abs=1e-9), tenant
    assert sum(spend.values()) == pytest.approx(bill["amount_total"], abs=33 * MICRO)
    assert sum(units.values()) == pytest.approx(bill["units_total"], abs=1e-9)
    assert bill["jobs_billed"] == 33
    assert metric(samples, "lynx_relay_price_per_video_second_dollars") == PRICE


# --- 2. hold ----------------------------------------------------------------------------------


async def test_a_hold_budget_keeps_requests_waiting_through_a_restart_until_raised(
    topics: Topics, tmp_path: Path
) -> None:
    """Tenant "capped" has a daily budget of $10 with ``hold``, "free" none; a default video
    costs 5.0625 x $0.5. Of 6 capped requests only the 4 the rule allows (spent + in flight
    below $10 before each start: $7.59 before the 4th, $10.125 after) reach fal, the other 2
    wait with no event, while all of free's go through. A restarted relay (same group and
    ledger) still knows the $10.125 spent: it reads the 2 again and still holds them. A relay
    started with the budget raised to $100 runs them."""
    capped_file = write_tenants(
        tmp_path / "capped.yaml",
        "tenants:\n  capped:\n    budget: {daily: 10, policy: hold}\n  free: {}\n",
    )
    raised_file = write_tenants(
        tmp_path / "raised.yaml",
        "tenants:\n  capped:\n    budget: {daily: 100, policy: hold}\n  free: {}\n",
    )
    allowed = jobs_allowed(10, DEFAULT_COST)
    assert allowed == 4
    capped = [f"capped-{i}" for i in range(6)]
    free = [f"free-{i}" for i in range(6)]
    config = EmulatorConfig(run_time=(0.1, 0.3), seed=142, unit_price=PRICE)
    async with emulator_running(config) as fal:
        held = relay_settings(topics, fal.base_url, RELAY_TENANTS_FILE=capped_file)

        # --- the budget is reached: 4 capped jobs, the rest wait ---
        async with relay_running(held) as relay:
            values = [
                tenant_request(t, rid)
                for pair in zip(capped, free, strict=True)
                for t, rid in zip(("capped", "free"), pair, strict=True)
            ]
            await produce(topics.bootstrap, topics.requests, values)
            await consume(topics.bootstrap, topics.results, allowed + len(free))

            async def settled() -> bool:
                m = await scrape(relay.ops_port)
                return (
                    metric(m, "lynx_relay_tenant_waiting", tenant="capped") == 2
                    and metric(m, "lynx_relay_tenant_running", tenant="capped") == 0
                )

            await until(settled, lambda: f"capped jobs at fal: {len(jobs_of(fal, 'capped'))}")
            first = await scrape(relay.ops_port)
            got = await results(topics)
            capped_jobs = len(jobs_of(fal, "capped"))
        assert capped_jobs == allowed, f"{capped_jobs} capped jobs submitted, the rule allows 4"
        assert {rid for rid in got if rid.startswith("free")} == set(free)
        assert {e["status"] for e in got.values()} == {"succeeded"}
        done = sorted(rid for rid in got if rid.startswith("capped"))
        assert len(done) == allowed
        spent = sum(got[rid]["cost"]["amount"] for rid in done)
        assert spent == pytest.approx(allowed * DEFAULT_COST)
        assert metric(first, "lynx_relay_spend_period_dollars", tenant="capped", period="day") == (
            pytest.approx(spent)
        )
        assert metric(first, "lynx_relay_budget_reached", tenant="capped") == 1
        assert metric(first, "lynx_relay_budget_reached", tenant="free") == 0

        # --- a restart: the spend is rebuilt from the ledger, the 2 still wait ---
        async with relay_running(held) as relay:
            after = [f"free-after-{i}" for i in range(3)]  # one per partition, behind the held
            await produce(
                topics.bootstrap, topics.requests, [tenant_request("free", r) for r in after]
            )
            await consume(topics.bootstrap, topics.results, allowed + len(free) + len(after))

            async def caught_up() -> bool:
                m = await scrape(relay.ops_port)
                return metric(m, "lynx_relay_tenant_waiting", tenant="capped") == 2

            await until(caught_up, lambda: "the restarted relay did not read the 2 held again")
            second = await scrape(relay.ops_port)
            got = await results(topics)
            capped_jobs = len(jobs_of(fal, "capped"))
        assert capped_jobs == allowed, f"after the restart {capped_jobs} capped jobs at fal"
        assert set(got) == {*done, *free, *after}
        assert metric(second, "lynx_relay_spend_period_dollars", tenant="capped", period="day") == (
            pytest.approx(spent)
        )
        assert metric(second, "lynx_relay_budget_reached", tenant="capped") == 1

        # --- the budget raised (a restart with a new tenants file): the 2 run ---
        raised = relay_settings(topics, fal.base_url, RELAY_TENANTS_FILE=raised_file)
        async with relay_running(raised) as relay:
            total = len(capped) + len(free) + len(after)
            await consume(topics.bootstrap, topics.results, total)

            async def all_spent() -> bool:
                m = await scrape(relay.ops_port)
                day = metric(m, "lynx_relay_spend_period_dollars", tenant="capped", period="day")
                return day is not None and day >= len(capped) * DEFAULT_COST - MICRO

            # The view takes a job's spend right after its event's transaction commits.
            await until(all_spent, lambda: "the last capped spend never counted", within=10)
            third = await scrape(relay.ops_port)
        final = await results(topics)
        capped_jobs = len(jobs_of(fal, "capped"))
    assert set(final) == {*capped, *free, *after}
    assert {e["status"] for e in final.values()} == {"succeeded"}
    assert capped_jobs == len(capped)  # each once: the 4 that ran first were not run again
    assert metric(third, "lynx_relay_spend_period_dollars", tenant="capped", period="day") == (
        pytest.approx(len(capped) * DEFAULT_COST)
    )
    assert metric(third, "lynx_relay_budget_reached", tenant="capped") == 0


# --- 3. reject --------------------------------------------------------------------------------


async def test_a_reject_budget_fails_each_request_past_it_with_budget_exceeded(
    topics: Topics, tmp_path: Path
) -> None:
    """Tenant "strict" has $5 a day with ``reject`` (and a month's budget, which needs 32
    days of ledger); its videos are 81 frames at 5 fps: 16.2 s, $8.10 each, so the first
    crosses the line. One succeeds; each of the other 5 gets one ``failed`` event with
    ``budget_exceeded`` (retryable, no cost) and never reaches fal."""
    file = write_tenants(
        tmp_path / "tenants.yaml",
        "tenants:\n  strict:\n    budget: {daily: 5, monthly: 100, policy: reject}\n",
    )
    n = 6
    assert jobs_allowed(5, 81 / 5 * PRICE) == 1
    config = EmulatorConfig(run_time=(0.1, 0.3), seed=143, unit_price=PRICE)
    async with emulator_running(config) as fal:
        settings = relay_settings(
            topics,
            fal.base_url,
            RELAY_TENANTS_FILE=file,
            RELAY_DEDUPE_RETENTION_S=str(33 * 24 * 3600),
        )
        async with relay_running(settings) as relay:
            lynx = {"image_url": "https://example.com/subject.png", "frames_per_second": 5}
            values = [
                request(f"strict-{i}", tenant="strict", input={**lynx, "prompt": f"strict: {i}"})
                for i in range(n)
            ]
            await produce(topics.bootstrap, topics.requests, values)
            got = events(await consume(topics.bootstrap, topics.results, n))

            async def spent() -> bool:
                m = await scrape(relay.ops_port)
                month = metric(
                    m, "lynx_relay_spend_period_dollars", tenant="strict", period="month"
                )
                return month is not None and month > 0

            # The view takes the job's spend right after its event's transaction commits.
            await until(spent, lambda: "the strict job's spend never counted", within=10)
            samples = await scrape(relay.ops_port)
        strict_jobs = jobs_of(fal, "strict")
    assert len(got) == n
    statuses = Counter(e["status"] for e in got.values())
    assert statuses == {"succeeded": 1, "failed": n - 1}
    assert len(strict_jobs) == 1, f"{len(strict_jobs)} jobs at fal for a tenant past its budget"
    for rid, event in got.items():
        if event["status"] == "succeeded":
            assert event["cost"]["amount"] == pytest.approx(8.1)
            continue
        error = event["error"]
        assert error["code"] == "budget_exceeded", event
        assert error["retryable"] is True, event
        assert error["details"]["budget"] == "daily", event
        assert event["cost"] is None, rid
        assert event["fal_request_id"] is None, rid
    assert metric(samples, "lynx_relay_budget_reached", tenant="strict") == 1
    assert metric(samples, "lynx_relay_spend_period_dollars", tenant="strict", period="month") == (
        pytest.approx(8.1)
    )


async def test_a_held_tenant_starts_again_when_its_period_turns(
    topics: Topics, tmp_path: Path
) -> None:
    """A "day" of 2 s (RELAY_BUDGET_DAY_S) and $2 a day with ``hold``: a job may start while
    spend plus jobs in flight is below the line, and one $2.53 job crosses it, so the tenant's
    requests start one per period as the periods turn (a job that ends in the next period is
    charged to it), with no restart and no new budget, and all of them end succeeded."""
    file = write_tenants(
        tmp_path / "tenants.yaml", "tenants:\n  daily:\n    budget: {daily: 2, policy: hold}\n"
    )
    day_s, n = 2.0, 3
    config = EmulatorConfig(run_time=(0.05, 0.1), seed=145, unit_price=PRICE)
    async with emulator_running(config) as fal:
        settings = relay_settings(
            topics, fal.base_url, RELAY_TENANTS_FILE=file, RELAY_BUDGET_DAY_S=str(day_s)
        )
        async with relay_running(settings):
            await produce(
                topics.bootstrap,
                topics.requests,
                [tenant_request("daily", f"daily-{i}") for i in range(n)],
            )
            got = events(await consume(topics.bootstrap, topics.results, n, within=60))
    assert {e["status"] for e in got.values()} == {"succeeded"}
    assert len(jobs_of(fal, "daily")) == n
    # One start per period: the budget held each next one until its period turned.
    periods = [
        math.floor(datetime.fromisoformat(e["timings"]["submitted_at"]).timestamp() / day_s)
        for e in got.values()
    ]
    assert len(set(periods)) == n, periods


# --- 4. the overshoot bound with 3 replicas ---------------------------------------------------


def owned(relay: RelayProcess) -> set[str]:
    """The request partitions a relay process owns now, from its log."""
    parts: set[str] = set()
    for line in relay.lines:
        if line.get("event") == "partitions_assigned":
            parts |= set(line["partitions"])
        elif line.get("event") == "partitions_revoked":
            parts -= set(line["partitions"])
    return parts


def ops_port(relay: RelayProcess) -> int:
    return int(next(li["http_port"] for li in relay.lines if li.get("event") == "relay_started"))


async def scrape_all(
    relays: Iterable[RelayProcess],
) -> list[dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    return [await scrape(ops_port(r)) for r in relays]


async def test_three_replicas_overshoot_a_budget_by_at_most_one_job_each(
    topics: Topics, tmp_path: Path
) -> None:
    """One tenant with $30 a day (``hold``), 40 requests over 3 partitions, one replica (a
    process) on each, jobs of 0.5-1 s at $2.53125: each replica counts its peers' jobs in
    flight from the ledger, so the final spend is at most the budget plus one job per replica
    ($37.59) and at least the budget less one job ($27.47). Every replica ends knowing the
    whole spend. The measured spend is in the assertion message.

    Measured (2026-11-29, RELAY_MAX_IN_FLIGHT 8): before budgeted tenants were paced, $45.56 to
    $60.75 (18-24 jobs: 5-8 started by each replica before its peers' intents reached it). With
    one start per second per replica (RELAY_BUDGET_PACE_S), 3 runs: $30.375 each, 12 jobs (4 per
    replica), an overshoot of 0.15 of a job: the least a $2.53 job can cross $30 by."""
    budget, replicas = 30.0, 3
    file = write_tenants(
        tmp_path / "tenants.yaml",
        f"tenants:\n  shared:\n    budget: {{daily: {budget:g}, policy: hold}}\n",
    )
    config = EmulatorConfig(run_time=(0.5, 1.0), seed=144, unit_price=PRICE)
    async with emulator_running(config) as fal:
        env = relay_env(topics, fal.base_url, RELAY_TENANTS_FILE=file)
        relays = [RelayProcess(env, f"r{i}") for i in range(replicas)]
        try:
            await asyncio.gather(*(r.start() for r in relays))

            async def one_partition_each() -> bool:
                mine = [owned(r) for r in relays]
                return all(len(m) == 1 for m in mine) and len(set().union(*mine)) == 3

            await until(one_partition_each, lambda: f"owned: {[owned(r) for r in relays]}", 30)
            await produce(
                topics.bootstrap,
                topics.requests,
                [tenant_request("shared", f"shared-{i}") for i in range(40)],
            )

            async def settled() -> bool:
                # Every replica sees finished spend at the line (so none starts another job)
                # and holds no job of the tenant (so every job started has its event).
                for m in await scrape_all(relays):
                    day = metric(
                        m, "lynx_relay_spend_period_dollars", tenant="shared", period="day"
                    )
                    running = metric(m, "lynx_relay_tenant_running", tenant="shared")
                    if day is None or day < budget or running != 0:
                        return False
                return True

            await until(settled, lambda: f"{len(jobs_of(fal, 'shared'))} jobs at fal", within=40)
            views = await scrape_all(relays)
            got = await results(topics)
            started = [r.count("job_submitted") for r in relays]
            for relay in relays:
                assert await relay.terminate() == 0
        finally:
            for relay in relays:
                await relay.close()
        shared_jobs = jobs_of(fal, "shared")
    spend = sum(e["cost"]["amount"] for e in got.values())
    overshoot = spend - budget
    measured = (
        f"spend ${spend:.5f} of ${budget:g} (overshoot ${overshoot:.5f}, "
        f"{overshoot / DEFAULT_COST:.2f} jobs), {len(got)} jobs, started per replica {started}"
    )
    assert len(got) == len(shared_jobs), measured  # every job at fal has its one event
    assert {e["status"] for e in got.values()} == {"succeeded"}, measured
    assert len(got) < 40, measured  # the rest wait
    assert budget - DEFAULT_COST <= spend <= budget + replicas * DEFAULT_COST, measured
    print(f"overshoot measured: {measured}")  # for the README figure (pytest -s)
    for m in views:  # every replica knows the whole spend
        day = metric(m, "lynx_relay_spend_period_dollars", tenant="shared", period="day")
        assert day == pytest.approx(spend), measured
        assert metric(m, "lynx_relay_budget_reached", tenant="shared") == 1, measured
    print(measured)  # the measurement, for the report (pytest -rP)
