"""One backoff policy for every retry loop of the relay: capped exponential delays.

A retry loop asks ``Backoff.next()`` for the delay before its next attempt and calls
``reset()`` when an attempt succeeds. The loops that use it (a Kafka write, a refused fal
key, a dropped status stream, a ledger catch-up, the ledger follower, a producer restart)
differ only in their numbers, so each names its own ``initial`` and ``cap``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delays ``initial``, ``initial * factor``, ... up to ``cap`` seconds."""

    initial: float
    cap: float
    factor: float = 2.0
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.cap:
            raise ValueError("need 0 < initial <= cap")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        self._next = self.initial

    def next(self) -> float:
        """The delay before the next attempt; the one after it grows."""
        delay = self._next
        self._next = min(self.cap, self._next * self.factor)
        return delay

    def peek(self) -> float:
        """The delay ``next()`` would give, without taking it (for log lines)."""
        return self._next

    def reset(self) -> None:
        """An attempt succeeded: the next failure starts again from ``initial``."""
        self._next = self.initial
