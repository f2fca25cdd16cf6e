"""A replica's share of the fal account's concurrency (``RELAY_FAL_CONCURRENCY``).

Kafka's group assignment is the only coordinator: a replica's share follows the partitions
of the requests topic it owns, ``ceil(cap * owned / total)``. Rounding up means no partition
starves (a replica with one partition of many still gets a slot), and it is the whole of the
overshoot: the shares of R replicas add up to at most ``cap + R - 1``, so the fleet's jobs at
fal exceed the cap by at most one per replica beyond the first. Jobs a replica resumes after
a take-over count against its share (they are running at fal), and it submits nothing new
until it is below it again; so a rebalance moves jobs between replicas without adding any.
"""

from __future__ import annotations

import math


def fleet_share(cap: int, owned: int, total: int) -> int:
    """Jobs this replica may have at fal: 0 while it owns no partition."""
    if owned <= 0 or total <= 0:
        return 0
    return max(1, math.ceil(cap * min(owned, total) / total))


def slot_limit(max_in_flight: int, cap: int | None, owned: int, total: int) -> int:
    """The replica's limit: RELAY_MAX_IN_FLIGHT, and its fleet share when there is a cap."""
    if cap is None:
        return max_in_flight
    return min(max_in_flight, fleet_share(cap, owned, total))
