"""Tenants: the upstream services that share one fal account, and the policy of each
(``RELAY_TENANTS_FILE``, YAML or JSON; a ConfigMap in the chart).

    default:              # the policy of every tenant the file does not name
      weight: 1
    tenants:
      checkout:
        weight: 3         # its share of the account, by cost, against the others' weights
        max_concurrent: 4 # most of its jobs at fal at once, per replica (unset: no limit)
        priorities: [high, normal, low]   # the classes it may ask for
      batch:
        priorities: [normal, low]
        budget: {daily: 10, monthly: 200, policy: hold}   # in the price's currency (USD)
    group_budget: {monthly: 5000, policy: hold}            # every tenant together

A request names its tenant in ``tenant`` (absent: ``default``). A priority the tenant may not
ask for becomes the highest one it may that is not above it (or its lowest). Metric labels
name the tenants of the file, ``default``, and ``other`` for the rest, so a producer cannot
grow the label set. Budgets (per UTC day and calendar month, ``hold`` or ``reject`` at the
line) are ``service.core.budgets``'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from service.core.budgets import Budget
from service.core.scheduler import Priority
from service.errors import SettingsError
from service.messages import DEFAULT_TENANT, TENANT_PATTERN

PriorityName = Literal["high", "normal", "low"]
OTHER = "other"


class BudgetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    daily: float | None = Field(default=None, ge=0)
    monthly: float | None = Field(default=None, ge=0)
    policy: Literal["hold", "reject"] = "hold"

    def budget(self) -> Budget:
        return Budget(self.daily, self.monthly, self.policy)


class TenantPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(default=1.0, gt=0, le=1000)
    budget: BudgetSpec = BudgetSpec()
    max_concurrent: int | None = Field(default=None, ge=1, le=100_000)
    priorities: tuple[PriorityName, ...] = Field(default=("high", "normal", "low"), min_length=1)

    def priority(self, asked: str | None) -> Priority:
        """The class a request of this tenant gets for the priority it asked for."""
        wanted = Priority.named(asked)
        allowed = sorted(Priority.named(p) for p in self.priorities)
        not_above = [p for p in allowed if p >= wanted]
        return not_above[0] if not_above else allowed[-1]


class Tenants(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: TenantPolicy = TenantPolicy()
    tenants: dict[Annotated[str, StringConstraints(pattern=TENANT_PATTERN)], TenantPolicy] = {}
    group_budget: BudgetSpec = BudgetSpec()

    @property
    def monthly_budgets(self) -> bool:
        """Whether a budget needs a month of spend (so the ledger must keep a month)."""
        specs = [self.default.budget, self.group_budget, *(p.budget for p in self.tenants.values())]
        return any(spec.monthly is not None for spec in specs)

    def policy(self, tenant: str) -> TenantPolicy:
        return self.tenants.get(tenant, self.default)

    def weights(self) -> dict[str, float]:
        return {name: p.weight for name, p in self.tenants.items()}

    def label(self, tenant: str) -> str:
        """The metric label of a tenant: bounded to the file's names."""
        return tenant if tenant in self.tenants or tenant == DEFAULT_TENANT else OTHER

    def labels(self) -> list[str]:
        return sorted({*self.tenants, DEFAULT_TENANT, OTHER})


def load_tenants(path: str | None) -> Tenants:
    """The tenants file (YAML, of which JSON is a part); no file: every tenant alike."""
    if path is None:
        return Tenants()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return Tenants.model_validate(raw or {})
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"RELAY_TENANTS_FILE: cannot read {path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise SettingsError(f"RELAY_TENANTS_FILE ({path}): {problems}") from None
