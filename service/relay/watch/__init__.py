"""Watching a job at fal until it is done: one watcher per ``RELAY_WATCH_MODE``.

- ``poll`` (``poll.py``): status calls on the core's ``PollSchedule``;
- ``stream`` (``stream.py``): fal's status stream, falling back to polling;
- ``webhook`` (``webhook.py``): fal's signed webhook, with a slow safety-net poll.

Each returns fal's final status and, when it already carried it (a webhook), the output, so
no result call is needed then. A watcher reports every status it sees through
``Watch.note``, which moves the job's lifecycle (and its progress events) along.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from service.core.ledger import FalRef
from service.ports import FalOutput, FalStatus


@dataclass(frozen=True, slots=True)
class Watch:
    """One job, as a watcher sees it."""

    ref: FalRef
    log: Any
    note: Callable[[FalStatus], bool]  # apply a status to the job; True once it is completed
    running_since: Callable[[], datetime | None]  # when fal reported it running, if it did
    expected: float | None = None  # how long jobs of its shape ran, if known
    fresh: bool = False  # fal answered its submit a moment ago (IN_QUEUE)


class Watcher(Protocol):
    async def watch(self, job: Watch) -> tuple[FalStatus, FalOutput | None]: ...
