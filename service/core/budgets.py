"""Budgets: spend per tenant per UTC day and month, and whether a tenant may start one more job.

Spend is what finished jobs cost (``core.cost``), counted once per finished ledger entry, so
every replica that follows the ledger sees every replica's spend, and a restart rebuilds it
from the ledger (which must then keep a month: see ``service.config``). Jobs still at fal
count too, at their expected cost (their ledger entries carry their expected units): a
replica does not start a job its peers' jobs in flight have already used the budget for.

A tenant may start a job while what it spent in the period plus what it has in flight is
below its budget (and the same holds for the group as a whole). What a replica cannot see are
its peers' jobs started in the last moments, before the ledger brought them over (a write and
the follower's next read: well under a second). So a replica starts a budgeted tenant's jobs
at most one per ``pace`` (a second by default, longer than that delay): then at most one job
per peer is unseen when a replica decides, and a budget is overshot by less than one job per
replica, plus what jobs cost beyond their estimate. Without the pace, a cold start of R
replicas with N slots each could start R x N jobs before any saw another's.

The policy says what happens at the line: ``hold`` keeps the tenant's requests waiting,
unsubmitted, until the period turns or the budget is raised; ``reject`` fails them with
``budget_exceeded`` (retryable).

Pure: amounts in, decisions out; the shell gives the time.
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

Policy = Literal["hold", "reject"]
GROUP = "*"  # the spend of every tenant together


@dataclass(frozen=True, slots=True)
class Budget:
    daily: float | None = None  # in the price's currency, per UTC day
    monthly: float | None = None  # ... per UTC calendar month
    policy: Policy = "hold"

    @property
    def limited(self) -> bool:
        return self.daily is not None or self.monthly is not None


def _month(day: date) -> tuple[int, int]:
    return day.year, day.month


@dataclass(frozen=True)
class SpendState:
    """A spend book's content: (tenant, day, amount) and (tenant, year, month, amount)."""

    day_seconds: float
    days: list[tuple[str, int, float]]
    months: list[tuple[str, int, int, float]]


class SpendBook:
    """Spend per tenant (and for ``GROUP``) per day and UTC calendar month. A "day" is
    ``day_seconds`` long, counted from the Unix epoch: 86,400 makes it the UTC day; a shorter
    one (``RELAY_BUDGET_DAY_S``) gives a daily budget a shorter period."""

    def __init__(self, day_seconds: float = 86_400.0) -> None:
        self._day_s = day_seconds
        self._days: defaultdict[tuple[str, int], float] = defaultdict(float)
        self._months: defaultdict[tuple[str, tuple[int, int]], float] = defaultdict(float)
        self._month_of: dict[int, tuple[int, int]] = {}

    def _day(self, at: datetime) -> int:
        return math.floor(at.timestamp() / self._day_s)

    def add(self, tenant: str, amount: float, at: datetime) -> None:
        stamp = at.timestamp()
        day = math.floor(stamp / self._day_s)
        # The month of a UTC day, worked out once a day: a replica reading a large ledger at
        # start adds millions of ends, a few hundred days apart at most.
        utc_day = math.floor(stamp / 86_400)
        month = self._month_of.get(utc_day)
        if month is None:
            month = self._month_of[utc_day] = _month(at.astimezone(UTC).date())
        days, months = self._days, self._months
        days[tenant, day] += amount
        days[GROUP, day] += amount
        months[tenant, month] += amount
        months[GROUP, month] += amount

    def today(self, tenant: str, now: datetime) -> float:
        return self._days.get((tenant, self._day(now)), 0.0)

    def this_month(self, tenant: str, now: datetime) -> float:
        return self._months.get((tenant, _month(now.astimezone(UTC).date())), 0.0)

    def state(self) -> SpendState:
        """What the book holds, for a checkpoint (``load`` takes it back)."""
        return SpendState(
            self._day_s,
            [(who, day, amount) for (who, day), amount in self._days.items()],
            [(who, y, m, amount) for (who, (y, m)), amount in self._months.items()],
        )

    def load(self, state: SpendState) -> None:
        """Hold what ``state`` holds (a book of the same day length), replacing everything."""
        if state.day_seconds != self._day_s:
            raise ValueError("a spend book of another day length")
        self._days = defaultdict(float, {(w, d): a for w, d, a in state.days})
        self._months = defaultdict(float, {(w, (y, m)): a for w, y, m, a in state.months})

    def prune(self, now: datetime) -> None:
        """Forget days before yesterday and months before last month (late entries of a
        period just turned still land)."""
        today = self._day(now)
        for key in [k for k in self._days if today - k[1] > 1]:
            del self._days[key]
        month = _month(now.astimezone(UTC).date())
        for mkey in [k for k in self._months if k[1] < _previous(month)]:
            del self._months[mkey]


def _previous(month: tuple[int, int]) -> tuple[int, int]:
    year, m = month
    return (year - 1, 12) if m == 1 else (year, m - 1)


class Line(enum.Enum):
    """Which budget a tenant has reached."""

    DAILY = "daily"
    MONTHLY = "monthly"


def paced(last_start: float | None, now: float, pace: float) -> bool:
    """Whether a budgeted tenant may start its next job on this replica now (monotonic
    seconds): one start per ``pace``, so that peers see each before the next."""
    return last_start is None or now - last_start >= pace


def reached(budget: Budget, today: float, this_month: float, in_flight: float) -> Line | None:
    """The budget line reached by what was spent (today, this month) plus what is in flight
    at its expected cost; None: one more job may start."""
    if budget.daily is not None and today + in_flight >= budget.daily:
        return Line.DAILY
    if budget.monthly is not None and this_month + in_flight >= budget.monthly:
        return Line.MONTHLY
    return None


@dataclass(slots=True)
class Spent:
    """A tenant's spend over a span: what ``lynx-relay spend`` prints."""

    jobs: int = 0
    units: float = 0.0
    amount: float = 0.0


def spend_between(
    finished: Iterable[tuple[str | None, datetime, float | None, float | None]],
    since: datetime,
    until: datetime,
) -> dict[str, Spent]:
    """Spend per tenant of finished jobs (tenant, end time, units, amount) that ended in
    ``[since, until)``; jobs that cost nothing are left out."""
    out: dict[str, Spent] = {}
    for tenant, at, units, amount in finished:
        if not amount or not since <= at < until:
            continue
        spent = out.setdefault(tenant or "default", Spent())
        spent.jobs += 1
        spent.units += units or 0.0
        spent.amount += amount
    return out
