"""When to ask fal for a job's status next.

Three regimes, one function:

- **Queued**: the wait grows in proportion to the time the job has been at fal, clamped to
  [min_interval, max_interval]: a job far back in the queue is asked about rarely (the
  number of calls grows with the logarithm of the wait until the cap).
- **Running, no expectation** (nothing of this shape has finished yet): every
  ``min_interval``, so its result is at most that late; with the default 1 s that is a tenth
  of fal_client's fixed 0.1 s polling, and it is only the first job of a shape.
- **An expected run time** (from jobs of the same shape that finished before, see
  ``RunTimes``): while the job runs, wait half the time it is still expected to need (capped),
  so the calls thin out far from the end and close in on it; near and after the expected end,
  poll at ``min_interval``, so a result is late by at most that much. A 60 s job then costs
  about a dozen calls with at most 1 s of delay. Past ``overrun`` times the expectation it
  goes back to the proportional regime: a wrong estimate costs calls, never correctness.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PollSchedule:
    min_interval: float = 1.0
    max_interval: float = 10.0
    factor: float = 0.25
    overrun: float = 1.5

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        if self.factor <= 0:
            raise ValueError("factor must be positive")

    def next_delay(
        self, elapsed: float, running_for: float | None = None, expected: float | None = None
    ) -> float:
        """Seconds to wait before the next status call.

        ``elapsed``: since submit. ``running_for``: since fal reported the job running (None
        while queued). ``expected``: the run time jobs of this shape took (None if unknown).
        """
        if running_for is not None:
            if expected is None:
                return self.min_interval
            if running_for <= expected * self.overrun:
                return self._clamp((expected - running_for) / 2)
        return self._clamp(elapsed * self.factor)

    def _clamp(self, seconds: float) -> float:
        return min(self.max_interval, max(self.min_interval, seconds))


class RunTimes:
    """How long jobs of a shape (e.g. resolution, frames, steps) ran: an exponentially
    weighted average per shape, fed from completed jobs. Bounded: the oldest shape seen is
    forgotten past ``max_shapes``."""

    def __init__(self, weight: float = 0.3, max_shapes: int = 256) -> None:
        if not 0 < weight <= 1:
            raise ValueError("weight must be in (0, 1]")
        self._weight = weight
        self._max = max_shapes
        self._avg: dict[str, float] = {}

    def observe(self, shape: str, seconds: float) -> None:
        if seconds <= 0:
            return
        old = self._avg.pop(shape, None)
        self._avg[shape] = seconds if old is None else old + self._weight * (seconds - old)
        if len(self._avg) > self._max:
            del self._avg[next(iter(self._avg))]

    def expected(self, shape: str) -> float | None:
        return self._avg.get(shape)
