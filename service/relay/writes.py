"""Durable writes: every result, dead letter and ledger entry is written until Kafka
acknowledges it, and a kind of write that keeps failing is reported once, not per message.

A transaction can commit and still be reported as failed (its answer was lost); writing it
again would publish twice. So after a failure the ledger is caught up first and asked
(``LedgerView.landed``): a write that landed is not repeated. Once a write is acknowledged
its ledger entry goes into the view through the ledger feed, the view's one owner.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from service.core.backoff import Backoff
from service.core.ledger import LedgerEntry, LedgerView
from service.ports import LedgerFeed
from service.relay.tools import Tools


class DurableWrites:
    def __init__(
        self,
        tools: Tools,
        *,
        ledger: LedgerFeed,
        view: LedgerView,
        backoff: tuple[float, float],
        stall: float,
    ) -> None:
        self._ledger = ledger
        self._view = view
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._log = tools.log
        self._backoff = backoff
        self._stall = stall
        self.failing: dict[str, str] = {}  # topic kind -> the first error seen

    async def write(
        self,
        write: Callable[[], Awaitable[None]],
        kind: str,
        log: Any,
        entry: LedgerEntry,
    ) -> None:
        """Never drop a write: retry with capped backoff until acknowledged (or cancelled)."""
        backoff = Backoff(*self._backoff)
        while True:
            try:
                await self._watched(write(), kind)
            except Exception as exc:  # aiokafka raises many types; every one means "not acked"
                self._metrics.publish_failures.labels(kind).inc()
                self._failing(kind, exc)
                delay = backoff.next()
                log.debug("kafka_write_failed", topic_kind=kind, error=repr(exc), retry_in_s=delay)
                await self._clock.sleep(delay)
                with contextlib.suppress(Exception):
                    await self._ledger.catch_up()
                    if self._view.landed(entry):
                        log.info("kafka_write_had_landed", topic_kind=kind)
                        self._ok(kind)
                        return
            else:
                self._ok(kind)
                self._ledger.written(entry)
                return

    async def _watched(self, write: Awaitable[None], kind: str) -> None:
        """A write that is not acknowledged within ``stall`` counts as failing while it
        waits (a broker that is down makes the client wait rather than fail)."""
        task = asyncio.ensure_future(write)
        try:
            if await self._clock.wait({task}, self._stall):
                self._failing(kind, TimeoutError(f"no acknowledgement within {self._stall:g} s"))
            await task
        except asyncio.CancelledError:
            task.cancel()
            raise

    def _failing(self, kind: str, exc: Exception) -> None:
        """One line per condition (a kind of write starting to fail), not one per message."""
        if kind not in self.failing:
            self.failing[kind] = repr(exc)
            self._metrics.kafka_writes_failing.labels(kind).set(1)
            self._log.error(
                "kafka_writes_failing",
                topic_kind=kind,
                error=repr(exc),
                hint="nothing is committed past the unwritten records; retrying with backoff",
            )

    def _ok(self, kind: str) -> None:
        if self.failing.pop(kind, None) is not None:
            self._metrics.kafka_writes_failing.labels(kind).set(0)
            self._log.info("kafka_writes_recovered", topic_kind=kind)
