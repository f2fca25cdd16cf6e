"""Progress events are bounded per job: a trickle, never a flood."""

from __future__ import annotations

from service.core.progress import ProgressGate


def test_queue_positions_go_when_they_change_and_not_too_often() -> None:
    gate = ProgressGate(min_interval=1.0)
    assert gate.queued(5, now=0.0)
    assert not gate.queued(5, now=2.0)  # unchanged
    gate = ProgressGate(min_interval=1.0)
    assert gate.queued(5, now=0.0)
    assert not gate.queued(4, now=0.5)  # too soon
    assert gate.queued(3, now=1.5)


def test_started_goes_once() -> None:
    gate = ProgressGate()
    assert gate.started()
    assert not gate.started()


def test_log_lines_are_capped_in_rate_and_in_total() -> None:
    gate = ProgressGate(min_interval=1.0, max_logs=5)
    assert gate.logs(3, now=0.0) == 3
    assert gate.logs(3, now=0.5) == 0  # too soon: dropped
    assert gate.logs(3, now=1.0) == 2  # the cap
    assert gate.logs(3, now=5.0) == 0
    assert gate.dropped == 3 + 1 + 3
