"""Waiting for fal's webhook (verified and parsed before it gets here), with a slow poll as
the safety net for a lost one."""

from __future__ import annotations

import asyncio

from service.ports import Clock, FalOutput, FalStatus
from service.relay.watch import Watch
from service.relay.watch.poll import PollWatcher

Delivery = tuple[FalStatus, FalOutput | None]


class Deliveries:
    """Webhooks matched to the jobs waiting for them by fal request id. One that arrives
    before its job waits for it (a fast job) is kept a while (bounded)."""

    def __init__(self, keep_early: int = 10_000) -> None:
        self._waiting: dict[str, asyncio.Future[Delivery]] = {}
        self._early: dict[str, Delivery] = {}
        self._keep_early = keep_early

    def expect(self, fal_request_id: str) -> asyncio.Future[Delivery]:
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        early = self._early.pop(fal_request_id, None)
        if early is not None:
            future.set_result(early)
        self._waiting[fal_request_id] = future
        return future

    def deliver(self, fal_request_id: str, delivery: Delivery) -> None:
        future = self._waiting.get(fal_request_id)
        if future is not None:
            if not future.done():
                future.set_result(delivery)
            return
        self._early[fal_request_id] = delivery
        if len(self._early) > self._keep_early:
            del self._early[next(iter(self._early))]

    def forget(self, fal_request_id: str) -> None:
        future = self._waiting.pop(fal_request_id, None)
        if future is not None and not future.done():
            future.cancel()


class WebhookWatcher:
    def __init__(
        self, clock: Clock, poller: PollWatcher, *, safety_poll: float, grace: float
    ) -> None:
        self._clock = clock
        self._poller = poller
        self._safety_poll = safety_poll
        self._grace = grace
        self.deliveries = Deliveries()

    async def watch(self, job: Watch) -> tuple[FalStatus, FalOutput | None]:
        fal_id = job.ref.request_id
        delivery = self.deliveries.expect(fal_id)
        try:
            while True:
                try:
                    async with self._clock.timeout(self._safety_poll):
                        status, output = await asyncio.shield(delivery)
                except TimeoutError:
                    polled = await self._poller.poll_once(job)
                    if polled is None:
                        continue
                    # Done at fal: its webhook is usually on the way; a moment's wait for it
                    # saves the result call (and is faster than it).
                    try:
                        async with self._clock.timeout(self._grace):
                            _status, output = await asyncio.shield(delivery)
                    except TimeoutError:
                        job.log.info("webhook_missed_safety_poll_found_it")
                        return polled, None
                    return polled, output
                job.note(status)
                return status, output
        finally:
            self.deliveries.forget(fal_id)
