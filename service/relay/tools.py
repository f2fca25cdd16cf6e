"""What every unit of the relay works with: the clock, the metrics and the logger."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.metrics import RelayMetrics
from service.ports import Clock


@dataclass(frozen=True, slots=True)
class Tools:
    clock: Clock
    metrics: RelayMetrics
    log: Any  # the relay's structlog logger
