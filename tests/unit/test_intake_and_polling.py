"""Intake accounting and the adaptive polling schedule."""

from __future__ import annotations

import pytest

from service.core.intake import IntakePlan, plan_intake
from service.core.polling import PollSchedule


def test_intake_takes_what_fits_under_both_bounds() -> None:
    assert plan_intake(free_slots=5, unfinished=0, max_unfinished=16) == IntakePlan(5, False)
    assert plan_intake(free_slots=5, unfinished=14, max_unfinished=16) == IntakePlan(2, False)


def test_intake_pauses_at_either_bound() -> None:
    assert plan_intake(free_slots=0, unfinished=3, max_unfinished=16).pause
    assert plan_intake(free_slots=8, unfinished=16, max_unfinished=16).pause


def test_poll_interval_grows_with_elapsed_time_within_bounds() -> None:
    schedule = PollSchedule(min_interval=1.0, max_interval=10.0, factor=0.25)
    assert schedule.next_delay(0.0) == 1.0
    assert schedule.next_delay(20.0) == 5.0
    assert schedule.next_delay(1_000.0) == 10.0


def test_poll_schedule_for_a_three_minute_job_costs_few_calls() -> None:
    """The README's claim: about 28 status calls for a 3-minute job with the defaults."""
    schedule = PollSchedule()
    elapsed, calls = 0.0, 0
    while elapsed < 180.0:
        calls += 1
        elapsed += schedule.next_delay(elapsed)
    assert 20 <= calls <= 32


def test_poll_schedule_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="min_interval"):
        PollSchedule(min_interval=5, max_interval=1)
