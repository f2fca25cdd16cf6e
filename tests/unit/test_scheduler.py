"""The scheduler between Kafka and fal: priorities, aging, and weighted fairness by cost.

Pure: the backlog and the choice are tested with plain values; time is a number.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from service.core.offsets import Partition
from service.core.scheduler import (
    DEFAULT_COST,
    Priority,
    Scheduler,
    Waiting,
    job_cost,
)

P0 = Partition("requests", 0)


def waiting(
    rid: str,
    tenant: str = "a",
    priority: Priority = Priority.NORMAL,
    cost: float = DEFAULT_COST,
    since: float = 0.0,
    place: Partition = P0,
    body: bytes | None = None,
) -> Waiting:
    return Waiting(
        place, int(rid.rsplit("-", maxsplit=1)[-1]), rid, tenant, priority, cost, since, body
    )


def anyone(_tenant: str) -> bool:
    return True


def drain(s: Scheduler, now: float = 0.0, count: int | None = None) -> list[Waiting]:
    out: list[Waiting] = []
    while count is None or len(out) < count:
        item = s.pick(now, anyone)
        if item is None:
            break
        out.append(item)
    return out


def test_a_higher_priority_class_goes_first_and_each_tenant_is_fifo() -> None:
    """high before normal before low; within a tenant, arrival order."""
    s = Scheduler()
    s.add(waiting("a-1", priority=Priority.LOW))
    s.add(waiting("a-2", priority=Priority.NORMAL))
    s.add(waiting("a-3", priority=Priority.HIGH))
    s.add(waiting("a-4", priority=Priority.NORMAL))
    assert [w.request_id for w in drain(s)] == ["a-3", "a-2", "a-4", "a-1"]
    assert len(s) == 0


def test_equal_weights_share_by_cost_not_by_count() -> None:
    """A tenant with jobs four times as big gets a quarter as many starts: the same cost."""
    s = Scheduler()
    for i in range(400):
        s.add(waiting(f"big-{i}", "big", cost=4.0))
        s.add(waiting(f"small-{i}", "small", cost=1.0))
    started = drain(s, count=200)
    cost = {t: sum(w.cost for w in started if w.tenant == t) for t in ("big", "small")}
    assert cost["big"] == pytest.approx(cost["small"], rel=0.05)
    assert (
        Counter(w.tenant for w in started)["small"] > 3 * Counter(w.tenant for w in started)["big"]
    )


def test_weights_three_to_one_hold_in_every_window_of_200_starts() -> None:
    """Both flooding with default-size jobs: in any 200 consecutive starts, the cost started
    by A is within 5 % of three times B's."""
    s = Scheduler({"a": 3.0, "b": 1.0})
    for i in range(3000):
        s.add(waiting(f"a-{i}", "a"))
        s.add(waiting(f"b-{i}", "b"))
    started = drain(s, count=2000)
    for start in range(len(started) - 200 + 1):
        window = started[start : start + 200]
        a = sum(w.cost for w in window if w.tenant == "a")
        b = sum(w.cost for w in window if w.tenant == "b")
        assert a / b == pytest.approx(3.0, rel=0.05), f"window at {start}"


@pytest.mark.parametrize("seed", range(5))
def test_weights_hold_by_cost_with_jobs_of_every_size(seed: int) -> None:
    """Jobs of ten sizes (a fifth to one of a default job): the cost ratio holds within 5 %
    over any 400 starts, and within 1 % over the whole run (one job's cost is a larger part
    of a short window: the README says how much)."""
    rng = random.Random(seed)
    sizes = [job_cost(f, fps) for f in (17, 33, 49, 65, 81) for fps in (16, 24)]
    s = Scheduler({"a": 3.0, "b": 1.0})
    for i in range(3000):
        s.add(waiting(f"a-{i}", "a", cost=rng.choice(sizes)))
        s.add(waiting(f"b-{i}", "b", cost=rng.choice(sizes)))
    started = drain(s, count=2000)

    def ratio(window: list[Waiting]) -> float:
        a = sum(w.cost for w in window if w.tenant == "a")
        return a / sum(w.cost for w in window if w.tenant == "b")

    for start in range(0, len(started) - 400 + 1, 10):
        assert ratio(started[start : start + 400]) == pytest.approx(3.0, rel=0.05), start
    assert ratio(started) == pytest.approx(3.0, rel=0.01)


def test_a_tenant_that_arrives_behind_a_flood_is_served_at_once() -> None:
    """2,000 of A's requests wait; B's 20 arrive later and all start within the next 40."""
    s = Scheduler()
    for i in range(2000):
        s.add(waiting(f"a-{i}", "a", since=0.0))
    drain(s, count=100)
    for i in range(20):
        s.add(waiting(f"b-{i}", "b", since=5.0))
    nxt = drain(s, now=5.0, count=40)
    assert Counter(w.tenant for w in nxt) == {"a": 20, "b": 20}


def test_a_low_request_is_overdue_after_the_aging_bound_under_sustained_normal_load() -> None:
    """Before ``aging`` seconds a low request waits behind normal ones; after, it goes next."""
    s = Scheduler(aging=60.0)
    s.add(waiting("b-1", "b", priority=Priority.LOW, since=0.0))
    for i in range(100):
        s.add(waiting(f"a-{i}", "a", since=float(i)))
    assert [w.tenant for w in drain(s, now=59.0, count=10)] == ["a"] * 10
    item = s.pick(60.0, anyone)
    assert item is not None
    assert item.request_id == "b-1"


def test_a_low_request_waits_twice_the_aging_bound_behind_high_ones() -> None:
    """Aging promotes one class per ``aging`` seconds: low is two classes below high."""
    s = Scheduler(aging=10.0)
    s.add(waiting("l-1", "l", priority=Priority.LOW, since=0.0))
    for i in range(10):
        s.add(waiting(f"h-{i}", "h", priority=Priority.HIGH, since=0.0))
    first = s.pick(15.0, anyone)
    assert first is not None
    assert first.tenant == "h"
    second = s.pick(20.0, anyone)
    assert second is not None
    assert second.request_id == "l-1"


def test_a_tenant_at_its_limit_is_passed_over_and_gains_no_credit_meanwhile() -> None:
    """While A may not start, B goes; when A may again, they alternate (A did not bank the
    rounds it sat out)."""
    s = Scheduler()
    for i in range(50):
        s.add(waiting(f"a-{i}", "a"))
        s.add(waiting(f"b-{i}", "b"))
    blocked = [s.pick(0.0, lambda t: t != "a") for _ in range(10)]
    assert {w.tenant for w in blocked if w} == {"b"}
    after = drain(s, count=10)
    assert Counter(w.tenant for w in after) == {"a": 5, "b": 5}


def test_nothing_is_picked_when_no_tenant_may_start() -> None:
    """At every tenant's limit the backlog keeps its requests."""
    s = Scheduler()
    s.add(waiting("a-1"))
    assert s.pick(0.0, lambda _t: False) is None
    assert len(s) == 1


def test_revoked_partitions_leave_the_backlog_with_their_bodies() -> None:
    """drop() takes out the requests of partitions no longer ours, and their bytes."""
    s = Scheduler()
    p1 = Partition("requests", 1)
    s.add(waiting("a-1", body=b"x" * 100))
    s.add(waiting("a-2", place=p1, body=b"y" * 50))
    s.add(waiting("b-3", "b", place=p1))
    assert (len(s), s.body_bytes) == (3, 150)
    dropped = s.drop([p1])
    assert sorted(w.request_id for w in dropped) == ["a-2", "b-3"]
    assert (len(s), s.body_bytes) == (1, 100)
    assert s.waiting_by_tenant() == {"a": 1}
    assert [w.request_id for w in drain(s)] == ["a-1"]
    assert s.body_bytes == 0


@pytest.mark.parametrize(
    ("frames", "fps", "expected"),
    [
        pytest.param(None, None, 81 / 16, id="fal-defaults"),
        pytest.param(81, 16, 81 / 16, id="a-default-job"),
        pytest.param(33, 24, 1.375, id="short-and-fast"),
        pytest.param(9, 5, 1.8, id="short-slow"),
    ],
)
def test_a_jobs_cost_is_what_fal_bills_its_seconds_of_video(
    frames: int | None, fps: int | None, expected: float
) -> None:
    """fal bills Lynx by the second of video, whatever the resolution: the scheduler weighs
    tenants by the same estimate budgets use; fal's defaults when left out."""
    assert job_cost(frames, fps) == pytest.approx(expected)


def test_priority_names() -> None:
    """A request's ``options.priority`` names its class; absent is normal."""
    assert [Priority.named(n) for n in ("high", "normal", "low", None)] == [
        Priority.HIGH,
        Priority.NORMAL,
        Priority.LOW,
        Priority.NORMAL,
    ]
