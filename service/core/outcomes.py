"""How a request ends: the outcome that becomes its one result event and its finished entry.

Every way a request can end is built here, so the codes, messages and ``retryable`` flags of
the contract's result event have one home: a fal result (succeeded), an error from fal or
from our own limits (failed), a cancel (cancelled), an invalid message, a relay bug. The
shell turns an ``Outcome`` into the wire event (``service.messages.result_event``).

Deadlines live here too: the job timeout counts from the submit (also for a resumed job),
and a request's own ``deadline`` can only shorten it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Status = Literal["succeeded", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str
    retryable: bool
    details: Any = None


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    error: Failure | None = None
    video: Mapping[str, Any] | None = None
    seed: int | None = None
    billed_units: float | None = None  # what fal's answer said it bills (None: it said nothing)

    @property
    def error_code(self) -> str:
        """The metric label: the error code, or ``none`` for a success."""
        return self.error.code if self.error else "none"


def succeeded(
    video: Mapping[str, Any], seed: int | None, billed_units: float | None = None
) -> Outcome:
    return Outcome("succeeded", video=video, seed=seed, billed_units=billed_units)


def failed(
    code: str,
    message: str,
    *,
    retryable: bool,
    details: Any = None,
    billed_units: float | None = None,
) -> Outcome:
    return Outcome("failed", Failure(code, message, retryable, details), billed_units=billed_units)


def crashed(error_type: str) -> Outcome:
    """A bug of ours, never the input: the request still gets its one event."""
    return failed("internal_error", f"relay error: {error_type}", retryable=True)


def invalid(message: str, details: Any = None) -> Outcome:
    return failed("invalid_request", message, retryable=False, details=details)


def _cancelled(message: str, details: Any = None) -> Outcome:
    return Outcome("cancelled", Failure("cancelled", message, False, details))


def budget_exceeded(tenant: str, line: str, budget: float, used: float) -> Outcome:
    """A request refused before its submit: its tenant (or the group) reached a budget whose
    policy is ``reject``. Retryable: the period turns, or the budget is raised."""
    who = "the group" if tenant == "*" else f"tenant {tenant!r}"
    return failed(
        "budget_exceeded",
        f"{who} reached its {line} budget of {budget:g} (spent and in flight: {used:.2f})",
        retryable=True,
        details={"tenant": tenant, "budget": line, "limit": budget, "used": round(used, 6)},
    )


def cancelled_before_submit() -> Outcome:
    return _cancelled("cancelled before it was submitted")


def cancelled_at_fal(error: str | None, error_type: str | None) -> Outcome | None:
    """fal's word for a job that ended because it was cancelled; None for any other end."""
    if error_type != "client_cancelled":
        return None
    return _cancelled(error or "the job was cancelled at fal", {"error_type": error_type})


# --- deadlines ----------------------------------------------------------------------------


def deadline_passed(now: datetime, deadline: datetime | None) -> bool:
    return deadline is not None and now >= deadline


def past_deadline_before_submit(deadline: datetime) -> Outcome:
    return failed(
        "timeout",
        "the request's deadline passed before it was submitted",
        retryable=False,
        details={"deadline": deadline.isoformat()},
    )


def time_left(
    now: datetime, submitted_at: datetime | None, job_timeout: float, deadline: datetime | None
) -> float:
    """Seconds the job may still take: the job timeout counts from the submit (a job not yet
    submitted has all of it); the request's deadline, if sooner, wins."""
    left = job_timeout
    if submitted_at is not None:
        left = job_timeout - (now - submitted_at).total_seconds()
    if deadline is not None:
        left = min(left, (deadline - now).total_seconds())
    return max(0.0, left)


def timed_out(now: datetime, deadline: datetime | None, job_timeout: float) -> Outcome:
    """The job ran out of time (it was cancelled at fal): its deadline, or our job timeout."""
    if deadline_passed(now, deadline):
        return failed(
            "timeout",
            "the request's deadline passed; the job was cancelled at fal",
            retryable=False,
        )
    return failed(
        "timeout", f"no result within RELAY_JOB_TIMEOUT_S={job_timeout:g}s", retryable=True
    )


def run_seconds(started_at: datetime | None, completed_at: datetime | None) -> float | None:
    if started_at is None or completed_at is None:
        return None
    return round((completed_at - started_at).total_seconds(), 3)
