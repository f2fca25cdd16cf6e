"""Sharing one fal account: tenants served fairly behind a flood, weights by cost,
priorities with aging, and a fleet-wide cap that holds through a rebalance and a kill -9.

Real Kafka, the emulator and the relay's composition root (or relays as processes for the
kill). Each test's emulator counts the jobs it holds unfinished (``peak_in_flight``: from
submit until the result is fetched).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fal_emulator.config import EmulatorConfig
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


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def tenant_requests(tenant: str, n: int, **fields: Any) -> list[bytes]:
    return [
        request(f"{tenant}-{i}", f"video for {tenant}-{i}", tenant=tenant, **fields)
        for i in range(n)
    ]


async def test_a_tenant_behind_a_flood_is_served_at_its_fair_share(topics: Topics) -> None:
    """A publishes 600 requests, then B 20; the fleet cap is 8 over 2 replicas. B does not
    wait behind A's backlog: all 20 of B's finish before A has finished 60 more.

    The bound does not grow with A's backlog: with equal weights each replica alternates A
    and B, so while B's 20 start A starts about 20 and finishes those and the (at most 9)
    jobs it held when B arrived. A still has hundreds waiting then (600 less the 100 waited
    for), so a scheduler that served in arrival order would finish all of those first."""
    config = EmulatorConfig(run_time=(0.02, 0.05), seed=21)
    async with emulator_running(config) as fal:
        settings = relay_settings(
            topics, fal.base_url, RELAY_MAX_IN_FLIGHT="8", RELAY_FAL_CONCURRENCY="8"
        )
        async with relay_running(settings), relay_running(settings):
            await produce(topics.bootstrap, topics.requests, tenant_requests("a", 600))
            await consume(topics.bootstrap, topics.results, 100, within=120)  # A is flowing
            await produce(topics.bootstrap, topics.requests, tenant_requests("b", 20))
            got = events(await consume(topics.bootstrap, topics.results, 620, within=300))
        stats = fal.stats()
    b = [e for rid, e in got.items() if rid.startswith("b-")]
    assert len(b) == 20
    assert {e["status"] for e in got.values()} == {"succeeded"}
    b_arrived = min(at(e["timings"]["received_at"]) for e in b)
    b_done = max(at(e["timings"]["completed_at"]) for e in b)
    a_meanwhile = [
        e
        for rid, e in got.items()
        if rid.startswith("a-") and b_arrived < at(e["timings"]["completed_at"]) <= b_done
    ]
    assert len(a_meanwhile) <= 60
    # The fleet's jobs at fal: the cap plus at most one per replica beyond the first.
    assert stats["peak_in_flight"] <= 8 + 1
    assert stats["submissions"] == 620


async def test_weights_share_by_cost_and_priorities_go_first(
    topics: Topics, tmp_path: Path
) -> None:
    """Tenants weighted 3:1, both with a backlog: in every 200 starts A's cost is within 5 %
    of three times B's. A high request published behind them overtakes the waiting ones."""
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  a: {weight: 3}\n  b: {weight: 1}\n")
    config = EmulatorConfig(run_time=(0.01, 0.03), seed=22)
    a, b = tenant_requests("a", 600), tenant_requests("b", 200)
    async with emulator_running(config) as fal:
        await produce(
            topics.bootstrap,
            topics.requests,
            # Alternating while both have requests (arrival order alone would start them
            # 1:1), then A's rest: at 3:1 both run out together, around the 800th start.
            [
                *(v for pair in zip(a[:200], b, strict=True) for v in pair),
                *a[200:],
            ],
        )
        settings = relay_settings(
            topics, fal.base_url, RELAY_MAX_IN_FLIGHT="4", RELAY_TENANTS_FILE=str(tenants)
        )
        async with relay_running(settings):
            await consume(topics.bootstrap, topics.results, 50, within=120)
            await produce(
                topics.bootstrap,
                topics.requests,
                [request("vip", "video for vip", tenant="b", options={"priority": "high"})],
            )
            got = events(await consume(topics.bootstrap, topics.results, 801, within=300))
        jobs = fal.stats(include_jobs=True)["jobs"]
    assert len(got) == 801
    # Starts in the order fal received them (the relay's own submitted_at is taken once fal
    # answered, which concurrent submits may reorder).
    started = [str(job["input"]["prompt"]).removeprefix("video for ") for job in jobs]
    tenant_of = [rid.split("-")[0] for rid in started if rid != "vip"]
    # Both tenants wait throughout the first 700 starts (both run out around the 800th).
    for start in range(20, 700 - 200):
        window = Counter(tenant_of[start : start + 200])
        assert window["a"] / window["b"] == pytest.approx(3.0, rel=0.05), start
    vip_arrived = at(got["vip"]["timings"]["received_at"])
    vip_at = started.index("vip")
    started_after_vip_arrived = [
        rid
        for rid in started[:vip_at]
        if rid != "vip" and at(got[rid]["timings"]["submitted_at"]) > vip_arrived
    ]
    assert len(started_after_vip_arrived) <= 4  # at most the slots that freed meanwhile


async def test_a_low_request_still_starts_within_the_aging_bound(topics: Topics) -> None:
    """Sustained normal load, one low request: it waits while it is young, and starts once
    it has waited RELAY_PRIORITY_AGING_S, long before the normal backlog is done."""
    config = EmulatorConfig(run_time=(0.05, 0.05), seed=23)
    async with emulator_running(config) as fal:
        normal = tenant_requests("n", 200)
        low = [request("low-0", "video for low-0", options={"priority": "low"})]
        # Behind a few normal ones, so it arrives to a backlog (not to a free slot). 200 of them
        # last 5 s or more (2 jobs of 0.05 s at once: at most 40 starts a second), so without
        # aging it would wait far beyond 3 s; in under 3 s at most about 130 start.
        await produce(
            topics.bootstrap, topics.requests, normal[:10] + low + normal[10:], partition=0
        )
        settings = relay_settings(
            topics, fal.base_url, RELAY_MAX_IN_FLIGHT="2", RELAY_PRIORITY_AGING_S="1.0"
        )
        async with relay_running(settings):
            got = events(await consume(topics.bootstrap, topics.results, 201, within=300))
    low_event = got["low-0"]
    waited = (
        at(low_event["timings"]["submitted_at"]) - at(low_event["timings"]["received_at"])
    ).total_seconds()
    assert 1.0 <= waited < 3.0
    normals_before = sum(
        1
        for rid, e in got.items()
        if rid.startswith("n-")
        and e["timings"]["submitted_at"] < low_event["timings"]["submitted_at"]
    )
    assert 10 <= normals_before < 150


async def test_the_fleet_cap_holds_through_a_rebalance_and_a_kill(topics: Topics) -> None:
    """RELAY_FAL_CONCURRENCY=6 over 3 replicas (as processes): the emulator never holds more
    than 6 + 2 unfinished jobs of the group (one per replica beyond the first), while a
    replica joins and another is killed with -9; every request ends with one event."""
    config = EmulatorConfig(run_time=(0.2, 0.4), seed=24)
    async with emulator_running(config) as fal:
        env = relay_env(
            topics,
            fal.base_url,
            RELAY_MAX_IN_FLIGHT="20",
            RELAY_FAL_CONCURRENCY="6",
            RELAY_SESSION_TIMEOUT_S="6",
        )
        relays = [RelayProcess(env, f"r{i}") for i in range(2)]
        try:
            await asyncio.gather(*(relay.start() for relay in relays))  # both at once
            await produce(
                topics.bootstrap,
                topics.requests,
                [request(f"cap-{i}", f"video for cap-{i}") for i in range(150)],
            )
            await relays[0].wait_for("job_submitted", times=5)
            relays.append(await RelayProcess(env, "r2").start())  # a rebalance
            await relays[2].wait_for("partitions_assigned")
            victim = max(relays, key=lambda r: r.count("job_submitted"))
            victim.kill()
            await victim.wait()
            got = events(await consume(topics.bootstrap, topics.results, 150, within=180))
            for relay in relays:
                if relay is not victim:
                    assert await relay.terminate() == 0
        finally:
            for relay in relays:
                await relay.close()
        stats = fal.stats(include_jobs=True)
    assert sorted(got) == sorted(f"cap-{i}" for i in range(150))
    assert len(await consume_all(topics.bootstrap, topics.results)) == 150
    assert stats["peak_in_flight"] <= 6 + 2
    prompts = Counter(job["input"]["prompt"] for job in stats["jobs"])
    assert set(prompts.values()) == {1}  # nothing paid twice
