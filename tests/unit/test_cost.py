"""What a video costs: the arithmetic as a table, and the relay over fakes putting it into the
result event, the finished ledger entry and the per-tenant spend."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.core.cost import Cost, Price, cost_of, expected_units
from service.metrics import RelayMetrics
from tests.fakes import FakeClock, FakeFal, FakeInbox, FakeOutbox, FakePricing
from tests.unit.test_relay import request, running

PRICE = Price(0.6)


@pytest.mark.parametrize(
    ("frames", "fps", "units"),
    [(None, None, 81 / 16), (33, 24, 1.375), (81, None, 81 / 16), (None, 30, 2.7)],
)
def test_expected_units_are_seconds_of_video_with_fals_defaults(
    frames: int | None, fps: int | None, units: float
) -> None:
    assert expected_units(frames, fps) == pytest.approx(units)


@pytest.mark.parametrize(
    ("status", "billed", "expected", "cost"),
    [
        # fal's word wins, whatever the status.
        ("succeeded", 5.0625, 2.0, Cost(5.0625, "second", 0.6, 3.0375, "USD", False)),
        ("failed", 0.5, 5.0, Cost(0.5, "second", 0.6, 0.3, "USD", False)),  # a billed 422
        ("cancelled", 1.0, 5.0, Cost(1.0, "second", 0.6, 0.6, "USD", False)),
        # No word from fal: a success is estimated, anything else cost nothing.
        ("succeeded", None, 1.375, Cost(1.375, "second", 0.6, 0.825, "USD", True)),
        ("failed", None, 5.0, None),
        ("cancelled", None, 5.0, None),
        ("succeeded", None, None, None),  # nothing to estimate from
        ("succeeded", 0.0, 5.0, None),  # fal billed nothing
    ],
)
def test_cost_of_a_job(
    status: str, billed: float | None, expected: float | None, cost: Cost | None
) -> None:
    assert cost_of(status, billed, expected, PRICE) == cost


def test_the_price_and_currency_are_fals() -> None:
    cost = cost_of("succeeded", 2.0, None, Price(0.25, unit="frame", currency="EUR"))
    assert cost == Cost(2.0, "frame", 0.25, 0.5, "EUR", False)


def spend(metrics: RelayMetrics, tenant: str) -> float:
    value: float = metrics.tenant_spend.labels(tenant)._value.get()
    return value


async def test_result_events_and_the_ledger_carry_what_fal_billed() -> None:
    inbox, outbox, fal, clock = FakeInbox(partitions=1), FakeOutbox(), FakeFal(), FakeClock()
    metrics = RelayMetrics()
    fal.bills = True
    inbox.append(0, request("default-size"))
    inbox.append(0, request_with("short", num_frames=33, frames_per_second=24))
    inbox.append(0, request("refused", "refused-billed"))
    inbox.append(0, request("crashed", "fail"))
    async with running(inbox, outbox, fal, clock=clock, metrics=metrics, pricing=FakePricing(0.5)):
        await outbox.wait_for(results=4)
    costs = {e.request_id: e.cost for e in outbox.results}
    assert costs["default-size"] is not None
    assert (costs["default-size"].units, costs["default-size"].amount) == (5.0625, 2.53125)
    assert costs["default-size"].estimated is False
    assert costs["short"] is not None
    assert (costs["short"].units, costs["short"].unit_price) == (1.375, 0.5)
    assert costs["refused"] is not None
    assert (costs["refused"].units, costs["refused"].amount) == (0.5, 0.25)
    assert costs["crashed"] is None  # a 5xx is never billed
    finished = {e.key: e for e in outbox.ledger if e.state == "finished"}
    assert {k: (e.tenant, e.units, e.amount) for k, e in finished.items()} == {
        "default-size": ("default", 5.0625, 2.53125),
        "short": ("default", 1.375, 0.6875),
        "refused": ("default", 0.5, 0.25),
        "crashed": ("default", None, None),
    }
    assert spend(metrics, "default") == pytest.approx(2.53125 + 0.6875 + 0.25)


def request_with(rid: str, **fields: Any) -> bytes:
    """A request whose input sets ``fields`` too."""
    body = {"request_id": rid, "input": {"image_url": "https://x/i.png", "prompt": "a", **fields}}
    return json.dumps(body).encode()


async def test_without_fals_units_a_success_is_estimated_from_its_request() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("estimated"))
    async with running(inbox, outbox, fal, pricing=FakePricing(None), fallback_unit_price=0.6):
        await outbox.wait_for(results=1)
    (event,) = outbox.results
    assert event.cost is not None
    assert (event.cost.units, event.cost.unit_price, event.cost.estimated) == (
        81 / 16,
        0.6,
        True,
    )
