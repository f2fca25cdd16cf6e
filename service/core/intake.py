"""How many records the consumer may take now, and whether to pause.

Two bounds: free fal slots (the in-flight limit), and records held but not yet finished (a
finished job whose result is still being published holds memory and an uncommitted offset, so
intake also stops when too many of those pile up, e.g. while the results topic cannot be
written). At either bound the shell pauses its partitions and keeps polling, so the consumer
stays in its group.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IntakePlan:
    fetch: int
    pause: bool


def plan_intake(free_slots: int, unfinished: int, max_unfinished: int) -> IntakePlan:
    room = min(free_slots, max_unfinished - unfinished)
    if room <= 0:
        return IntakePlan(fetch=0, pause=True)
    return IntakePlan(fetch=room, pause=False)
