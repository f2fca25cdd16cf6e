"""Budgets in the relay: whether a tenant may start one more job (``service.core.budgets``
decides, from the ledger's spend and jobs in flight), and the refusal of a request whose
tenant is at a ``reject`` budget: one ``budget_exceeded`` event with its ``finished`` entry,
nothing submitted.

``hold`` needs nothing here beyond ``may_start``: the backlog does not pick the tenant's
requests, and they wait, unsubmitted, until the period turns or the budget is raised (a
restart with a new tenants file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.core import outcomes
from service.core.budgets import GROUP, Budget, Line, paced, reached
from service.core.cost import Price
from service.core.ledger import LedgerEntry, LedgerView, Source, ledger_time
from service.messages import VideoRequest, instant_event
from service.ports import InboundRecord, Outbox
from service.relay.commits import Commits
from service.relay.context import Jobs
from service.relay.tools import Tools
from service.relay.writes import DurableWrites
from service.tenants import Tenants


@dataclass(frozen=True, slots=True)
class AtLine:
    """A budget reached: whose (a tenant, or ``GROUP``), which line, and how much is used."""

    who: str
    budget: Budget
    line: Line
    used: float

    @property
    def limit(self) -> float:
        value = self.budget.daily if self.line is Line.DAILY else self.budget.monthly
        assert value is not None
        return value


class Budgets:
    def __init__(
        self,
        tools: Tools,
        *,
        tenants: Tenants,
        view: LedgerView,
        jobs: Jobs,
        price: Callable[[], Price],
        outbox: Outbox,
        commits: Commits,
        writes: DurableWrites,
        pace: float = 1.0,
    ) -> None:
        self._tenants = tenants
        self._pace = pace
        self._last_start: dict[str, float] = {}  # budgeted tenants: monotonic time of a start
        self._view = view
        self._jobs = jobs
        self._price = price
        self._outbox = outbox
        self._commits = commits
        self._writes = writes
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._log = tools.log
        group = tenants.group_budget.budget()
        self._group = group if group.limited else None
        self.limited = self._group is not None or any(
            p.budget.budget().limited for p in (tenants.default, *tenants.tenants.values())
        )
        self._export()

    def _export(self) -> None:
        """Spend and budgets per tenant of the file (and the group), read at scrape time;
        spend with or without a budget."""
        names = {
            name: self._tenants.policy(name).budget.budget() for name in self._tenants.labels()
        }
        names.pop("other", None)  # the tenants the file does not name: not one spend
        names[GROUP] = self._group or Budget()
        for name, budget in names.items():
            label = "all" if name == GROUP else name
            for period, limit in (("day", budget.daily), ("month", budget.monthly)):
                self._metrics.spend_period.labels(label, period).set_function(
                    self._spent(name, period)
                )
                if limit is not None:
                    self._metrics.budget.labels(label, period).set(limit)
            self._metrics.budget_reached.labels(label).set_function(self._reached(name))

    def _spent(self, who: str, period: str) -> Callable[[], float]:
        def spent() -> float:
            now = self._clock.now()
            if period == "day":
                return self._view.spend.today(who, now)
            return self._view.spend.this_month(who, now)

        return spent

    def _reached(self, who: str) -> Callable[[], float]:
        def reached_now() -> float:
            at = self._group_line() if who == GROUP else self.at_line(who)
            return 1.0 if at is not None and at.who == who else 0.0

        return reached_now

    def at_line(self, tenant: str) -> AtLine | None:
        """The budget ``tenant`` has reached (its own, or the group's); None: it may start."""
        if not self.limited:
            return None
        own = self._tenants.policy(tenant).budget.budget()
        return self._line(tenant, own) or self._group_line()

    def _group_line(self) -> AtLine | None:
        return None if self._group is None else self._line(GROUP, self._group)

    def _line(self, who: str, budget: Budget) -> AtLine | None:
        if not budget.limited:
            return None
        now = self._clock.now()
        tenant = None if who == GROUP else who
        units = self._view.units_in_flight(tenant) + self._unrecorded_units(tenant)
        in_flight = units * self._price().unit_price
        spend = self._view.spend
        today, month = spend.today(who, now), spend.this_month(who, now)
        line = reached(budget, today, month, in_flight)
        if line is None:
            return None
        used = (today if line is Line.DAILY else month) + in_flight
        return AtLine(who, budget, line, used)

    def may_start(self, tenant: str) -> bool:
        """For the backlog: False while the tenant is at a ``hold`` budget, and between two
        starts of a budgeted tenant closer than the pace."""
        if not self._budgeted(tenant):
            return True
        if not paced(self._last_start.get(tenant), self._clock.monotonic(), self._pace):
            return False
        at = self.at_line(tenant)
        return at is None or at.budget.policy != "hold"

    def started(self, tenant: str) -> None:
        """A job of ``tenant`` starts (for the pace)."""
        if self._budgeted(tenant):
            self._last_start[tenant] = self._clock.monotonic()

    def _budgeted(self, tenant: str) -> bool:
        return self._group is not None or self._tenants.policy(tenant).budget.budget().limited

    def refuses(self, tenant: str) -> AtLine | None:
        """The ``reject`` budget that refuses the tenant's next request, if any."""
        at = self.at_line(tenant)
        return at if at is not None and at.budget.policy == "reject" else None

    def _unrecorded_units(self, tenant: str | None) -> float:
        """Expected units of this replica's jobs not in the ledger yet (being submitted)."""
        total = 0.0
        for ctx in self._jobs.contexts():
            if tenant is not None and ctx.tenant != tenant:
                continue
            entry = self._view.get(ctx.request_id)
            if ctx.expected_units and (entry is None or not entry.open):
                total += ctx.expected_units
        return total

    async def refuse(
        self, record: InboundRecord, source: Source, request: VideoRequest, at: AtLine
    ) -> None:
        rid = request.request_id
        log = self._log.bind(request_id=rid, tenant=request.tenant_name)
        now = self._clock.now()
        outcome = outcomes.budget_exceeded(at.who, at.line.value, at.limit, at.used)
        event = instant_event(rid, outcome, now)
        done = LedgerEntry(
            key=rid,
            state="finished",
            source=source,
            at=ledger_time(now),
            status="failed",
            tenant=request.tenant_name,
        )
        await self._writes.write(lambda: self._outbox.finish(event, done), "results", log, done)
        self._metrics.results.labels("failed", "budget_exceeded").inc()
        log.info("result_published", status="failed", error_code="budget_exceeded")
        self._commits.finish(record.part, record.offset)
