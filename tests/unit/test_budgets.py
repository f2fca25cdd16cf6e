"""Budgets: the spend book and the line as tables, then the relay over fakes holding and
refusing a tenant's requests while the others' go on, across a restart and a turning day."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.config import load_settings
from service.core.budgets import GROUP, Budget, Line, SpendBook, reached, spend_between
from service.core.ledger import LedgerEntry, Source
from service.core.offsets import Partition
from service.errors import SettingsError
from service.tenants import Tenants, load_tenants
from tests.fakes import FakeClock, FakeFal, FakeInbox, FakeOutbox
from tests.unit.test_relay import T0, running

DAY = datetime(2026, 11, 24, 15, tzinfo=UTC)
JOB = 81 / 16  # what a default-size job bills, at $1 a unit in these tests


def test_spend_is_kept_per_tenant_day_and_month_and_for_the_group() -> None:
    book = SpendBook()
    book.add("a", 2.0, DAY)
    book.add("a", 3.0, DAY - timedelta(days=1))
    book.add("b", 4.0, DAY)
    book.add("a", 7.0, datetime(2026, 10, 31, 23, tzinfo=UTC))  # last month
    assert (book.today("a", DAY), book.this_month("a", DAY)) == (2.0, 5.0)
    assert (book.today(GROUP, DAY), book.this_month(GROUP, DAY)) == (6.0, 9.0)
    assert book.today("c", DAY) == 0.0
    next_month = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    assert (book.today("a", next_month), book.this_month("a", next_month)) == (0.0, 0.0)


def test_pruning_keeps_yesterday_and_last_month() -> None:
    book = SpendBook()
    for days_ago in (0, 1, 2, 40, 70):
        book.add("a", 1.0, DAY - timedelta(days=days_ago))
    book.prune(DAY)
    assert book.today("a", DAY - timedelta(days=1)) == 1.0
    assert book.today("a", DAY - timedelta(days=2)) == 0.0  # gone
    assert book.this_month("a", DAY - timedelta(days=40)) == 1.0  # October: last month
    assert book.this_month("a", DAY - timedelta(days=70)) == 0.0  # September: gone


@pytest.mark.parametrize(
    ("budget", "today", "month", "in_flight", "line"),
    [
        (Budget(daily=10), 4.0, 4.0, 5.0, None),
        (Budget(daily=10), 4.0, 4.0, 6.0, Line.DAILY),  # in flight counts
        (Budget(daily=10), 10.0, 10.0, 0.0, Line.DAILY),  # at the line: no more
        (Budget(monthly=100), 9.0, 99.0, 1.0, Line.MONTHLY),
        (Budget(daily=10, monthly=100), 1.0, 120.0, 0.0, Line.MONTHLY),
        (Budget(), 1e9, 1e9, 1e9, None),  # no budget
        (Budget(daily=0), 0.0, 0.0, 0.0, Line.DAILY),  # a zero budget stops everything
    ],
)
def test_the_line(
    budget: Budget, today: float, month: float, in_flight: float, line: Line | None
) -> None:
    assert reached(budget, today, month, in_flight) == line


def request(rid: str, tenant: str, prompt: str = "a pumpkin") -> bytes:
    body = {"request_id": rid, "tenant": tenant, "input": {"image_url": "https://x/i.png"}}
    body["input"] = {"image_url": "https://x/i.png", "prompt": prompt}
    return json.dumps(body).encode()


def tenants(**budgets: dict[str, Any]) -> Tenants:
    return Tenants.model_validate(
        {"tenants": {name: {"budget": spec} for name, spec in budgets.items()}}
    )


async def test_a_held_tenant_waits_unsubmitted_while_the_others_go_on_until_the_day_turns() -> None:
    inbox, outbox, fal, clock = FakeInbox(partitions=1), FakeOutbox(), FakeFal(), FakeClock()
    fal.bills = True
    for i in range(3):
        inbox.append(0, request(f"a{i}", "a"))
    for i in range(3):
        inbox.append(0, request(f"b{i}", "b"))
    async with running(
        inbox,
        outbox,
        fal,
        limit=2,
        clock=clock,
        tenants=tenants(a={"daily": 10, "policy": "hold"}),
        fallback_unit_price=1.0,
        budget_pace=0.0,  # the pace has its own test
    ) as relay:
        # a0 and a1 fit ($5.06 each, 10.13 with both in flight); a2 must wait.
        await outbox.wait_for(results=5)
        assert sorted(e.request_id for e in outbox.results) == ["a0", "a1", "b0", "b1", "b2"]
        assert relay.waiting == 1
        assert len(fal.submitted) == 5
        clock.advance(24 * 3600)  # the next UTC day: a's budget is new
        await outbox.wait_for(results=6)
    assert len(fal.submitted) == 6
    a2 = next(e for e in outbox.results if e.request_id == "a2")
    assert a2.status == "succeeded"
    assert a2.timings.submitted_at is not None
    assert a2.timings.submitted_at.date() > T0.date()


async def test_a_rejecting_budget_fails_the_requests_it_stops_and_submits_nothing() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    fal.bills = True
    for i in range(3):
        inbox.append(0, request(f"r{i}", "r", prompt="polls=3"))
    async with running(
        inbox,
        outbox,
        fal,
        limit=4,
        tenants=tenants(r={"daily": 5, "policy": "reject"}),
        fallback_unit_price=1.0,
    ):
        await outbox.wait_for(results=3)
    events = {e.request_id: e for e in outbox.results}
    assert events["r0"].status == "succeeded"  # $5.06 in flight puts r at the line
    for rid in ("r1", "r2"):
        error = events[rid].error
        assert error is not None
        assert (events[rid].status, error.code, error.retryable) == (
            "failed",
            "budget_exceeded",
            True,
        )
        assert events[rid].fal_request_id is None
    assert len(fal.submitted) == 1
    assert inbox.committed == {0: 3}


async def test_spend_is_rebuilt_from_the_ledger_after_a_restart() -> None:
    """What an earlier process spent today is in the ledger's finished entries: a new
    process holds the tenant at once."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    earlier = [
        LedgerEntry(
            key=f"old-{i}",
            state="finished",
            source=Source("requests", 1, i),
            at=T0 + timedelta(hours=1),
            status="succeeded",
            tenant="a",
            units=JOB,
            amount=JOB,
        )
        for i in range(2)
    ]
    inbox.append(0, request("a-new", "a"))
    inbox.append(0, request("b-new", "b"))
    async with running(
        inbox,
        outbox,
        fal,
        ledger=earlier,
        preloaded=True,
        tenants=tenants(a={"daily": 10}),
        fallback_unit_price=1.0,
    ) as relay:
        await relay.partitions_assigned({Partition(inbox.topic, 0)})
        await outbox.wait_for(results=1)
        assert [e.request_id for e in outbox.results] == ["b-new"]
        assert relay.waiting == 1
    assert len(fal.submitted) == 1


def test_the_tenants_file_names_budgets_and_a_monthly_one_needs_a_month_of_ledger(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        "  batch:\n"
        "    budget: {daily: 10, monthly: 200, policy: reject}\n"
        "group_budget: {monthly: 5000}\n"
    )
    loaded = load_tenants(str(path))
    assert loaded.policy("batch").budget.budget() == Budget(10, 200, "reject")
    assert loaded.group_budget.budget() == Budget(None, 5000, "hold")
    assert loaded.policy("anyone").budget.budget() == Budget()
    env = {"FAL_QUEUE_URL": "http://127.0.0.1:9", "RELAY_TENANTS_FILE": str(path)}
    with pytest.raises(SettingsError, match="RELAY_DEDUPE_RETENTION_S"):
        load_settings(env)
    settings = load_settings({**env, "RELAY_DEDUPE_RETENTION_S": str(32 * 24 * 3600)})
    assert settings.tenants.monthly_budgets


def test_a_bad_budget_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  batch:\n    budget: {daily: -1, policy: maybe}\n")
    with pytest.raises(SettingsError, match="daily") as caught:
        load_tenants(str(path))
    assert "policy" in str(caught.value)


def test_spend_between_sums_what_ended_in_the_span_per_tenant() -> None:
    finished = [
        ("a", DAY, 5.0, 3.0),
        ("a", DAY + timedelta(hours=1), 1.0, 0.6),
        (None, DAY, 2.0, 1.2),  # no tenant: the default one
        ("b", DAY - timedelta(days=30), 5.0, 3.0),  # before the span
        ("b", DAY, None, None),  # cost nothing
        ("c", DAY + timedelta(days=1), 5.0, 3.0),  # at the span's end: out
    ]
    got = spend_between(finished, DAY - timedelta(days=1), DAY + timedelta(days=1))
    assert {t: (s.jobs, s.units, round(s.amount, 6)) for t, s in got.items()} == {
        "a": (2, 6.0, 3.6),
        "default": (1, 2.0, 1.2),
    }


async def test_a_budgeted_tenant_starts_one_job_per_pace_on_a_replica() -> None:
    """So that its peers see each start (through the ledger) before the next: the bound on
    how far replicas that cannot see each other's newest jobs overshoot a budget."""
    inbox, outbox, fal, clock = FakeInbox(partitions=1), FakeOutbox(), FakeFal(), FakeClock()
    inbox.append(0, request("p0", "paced", prompt="hold"))
    inbox.append(0, request("p1", "paced", prompt="hold"))
    inbox.append(0, request("free", "free"))
    async with running(
        inbox,
        outbox,
        fal,
        limit=3,
        clock=clock,
        tenants=tenants(paced={"daily": 1000}),
        budget_pace=1.0,
    ) as relay:
        await outbox.wait_for(results=1)  # "free" went past the paced p1
        assert [e.request_id for e in outbox.results] == ["free"]
        assert [a["prompt"] for a in fal.submitted] == ["hold", "a pumpkin"]
        assert relay.waiting == 1
        clock.advance(1.0)
        await fal.wait_submitted(3)
