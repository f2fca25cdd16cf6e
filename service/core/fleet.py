"""A replica's share of the fal account's concurrency (``RELAY_FAL_CONCURRENCY``).

Kafka's group assignment is the only coordinator: a replica's share follows the partitions
of the requests topic it owns, ``ceil(cap * owned / total)``. Rounding up means no partition
starves (a replica with one partition of many still gets a slot): the shares of R replicas
add up to at most ``cap + R - 1``, one job per replica beyond the first.

A rebalance moves jobs with their partitions, and a replica may then hold more than its new
share (it resumed them; they run at fal anyway), while another holds less than its own. Were
the shares alone the rule, the second would fill its share and the group would exceed the cap
until the first's extra jobs ended. So the shell (``service.relay.context.Jobs``) also asks
the shared ledger: a replica starts a job only while the group's jobs at fal (the ledger's
``submitted`` entries, whoever holds them) plus its own being submitted stay below the cap.
Replicas starting in the same moment, before they see each other's entries, can still pass
it: that is the stated bound, at most one job per replica beyond the first.
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
