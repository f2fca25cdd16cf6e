"""Which progress events of a job to publish: a bounded number, at a bounded rate.

Progress events (queued with its position, started, fal's log lines) are a courtesy to
requesters watching a long job; they must never cost more than a trickle per job. So per job:
the first ``started`` always goes; a ``queued`` event only when the position changed and at
most every ``min_interval`` seconds; log lines at most ``max_logs`` in all and at most one
batch every ``min_interval`` seconds (lines in between are dropped and counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ProgressGate:
    min_interval: float = 1.0
    max_logs: int = 50
    _last_queued_at: float | None = None
    _last_position: int | None = None
    _started: bool = False
    _last_logs_at: float | None = None
    _logs_sent: int = 0
    dropped: int = field(default=0)

    def queued(self, position: int | None, now: float) -> bool:
        if position == self._last_position:
            return False
        if self._last_queued_at is not None and now - self._last_queued_at < self.min_interval:
            return False
        self._last_queued_at, self._last_position = now, position
        return True

    def started(self) -> bool:
        if self._started:
            return False
        self._started = True
        return True

    def logs(self, count: int, now: float) -> int:
        """How many of ``count`` new log lines may go now."""
        if count <= 0:
            return 0
        if self._last_logs_at is not None and now - self._last_logs_at < self.min_interval:
            self.dropped += count
            return 0
        allowed = min(count, self.max_logs - self._logs_sent)
        self.dropped += count - allowed
        if allowed > 0:
            self._logs_sent += allowed
            self._last_logs_at = now
        return allowed
