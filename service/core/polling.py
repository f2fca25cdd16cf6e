"""When to ask fal for a job's status next.

The interval grows in proportion to the time the job has been at fal, clamped to
[min_interval, max_interval]. Why: a job's result is late by at most one interval, so a fixed
*fraction* of the elapsed time bounds the relative delay (25 % by default) while the number of
status calls grows only with the logarithm of the job's duration until the cap. With the
defaults (1 s .. 10 s, factor 0.25) a 3-minute Lynx job costs about 28 status calls, where
fal_client's fixed 0.1 s costs 1,800.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PollSchedule:
    min_interval: float = 1.0
    max_interval: float = 10.0
    factor: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        if self.factor <= 0:
            raise ValueError("factor must be positive")

    def next_delay(self, elapsed: float) -> float:
        """Seconds to wait before the next status call, ``elapsed`` seconds after submit."""
        return min(self.max_interval, max(self.min_interval, elapsed * self.factor))
