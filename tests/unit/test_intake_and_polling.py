"""Intake accounting and the adaptive polling schedule."""

from __future__ import annotations

import pytest

from service.core.intake import IntakePlan, plan_intake
from service.core.polling import PollSchedule, RunTimes


def test_intake_takes_what_fits_under_both_bounds() -> None:
    assert plan_intake(room=5, unfinished=0, max_unfinished=16) == IntakePlan(5, False)
    assert plan_intake(room=5, unfinished=14, max_unfinished=16) == IntakePlan(2, False)


def test_intake_pauses_at_either_bound() -> None:
    assert plan_intake(room=0, unfinished=3, max_unfinished=16).pause
    assert plan_intake(room=8, unfinished=16, max_unfinished=16).pause


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


def test_with_an_expected_run_time_polls_thin_out_and_close_in_on_the_end() -> None:
    """A 60 s job whose shape took 60 s before: about a dozen calls, none more than 1 s after
    the end (fal_client's fixed 0.1 s would make 600)."""
    schedule = PollSchedule(min_interval=1.0, max_interval=10.0)
    elapsed, calls, run = 0.0, 0, 60.0
    while elapsed < run:
        calls += 1
        elapsed += schedule.next_delay(elapsed, running_for=elapsed, expected=run)
    assert calls <= 15
    assert elapsed - run <= 1.0


def test_a_job_overrunning_its_expectation_falls_back_to_the_proportional_schedule() -> None:
    schedule = PollSchedule()
    assert schedule.next_delay(100.0, running_for=100.0, expected=60.0) == 10.0
    assert schedule.next_delay(61.0, running_for=61.0, expected=60.0) == 1.0


def test_run_times_average_per_shape_and_forget_the_oldest_shape() -> None:
    times = RunTimes(weight=0.5, max_shapes=2)
    assert times.expected("a") is None
    times.observe("a", 10.0)
    times.observe("a", 20.0)
    assert times.expected("a") == 15.0
    times.observe("b", 5.0)
    times.observe("c", 5.0)
    assert times.expected("a") is None
    assert times.expected("c") == 5.0


def test_a_running_job_of_an_unknown_shape_is_polled_every_min_interval() -> None:
    """The first job of a shape: at most 1 s late, a tenth of fal_client's calls."""
    schedule = PollSchedule(min_interval=1.0, max_interval=10.0)
    assert schedule.next_delay(120.0, running_for=30.0, expected=None) == 1.0
    assert schedule.next_delay(120.0, running_for=None, expected=None) == 10.0  # still queued
