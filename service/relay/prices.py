"""The unit price in force: the account's, from fal's Platform API, asked at start and every
hour; until fal has answered (or when it will not say), ``RELAY_PRICE_PER_VIDEO_SECOND``."""

from __future__ import annotations

import asyncio

from service.core.backoff import Backoff
from service.core.cost import Price
from service.errors import FalError, FalHistoryRefused, FalUnauthorized
from service.ports import FalPricing
from service.relay.tools import Tools

REFRESH_S = 3600.0


class Prices:
    def __init__(
        self,
        tools: Tools,
        *,
        pricing: FalPricing | None,
        fallback: Price,
        refresh: float = REFRESH_S,
    ) -> None:
        self._pricing = pricing
        self._price = fallback
        self._refresh = refresh
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._log = tools.log
        self._metrics.price_per_video_second.set(fallback.unit_price)

    def current(self) -> Price:
        return self._price

    async def run(self) -> None:
        """Ask fal now and every ``refresh`` seconds (a background task)."""
        if self._pricing is None:
            return
        backoff = Backoff(5.0, self._refresh)
        while True:
            try:
                price = await self._pricing.price()
            except (FalHistoryRefused, FalUnauthorized) as exc:
                self._log.warning(
                    "fal_pricing_off", reason=exc.message, unit_price=self._price.unit_price
                )
                return
            except FalError as exc:
                delay = backoff.next()
                self._log.warning("fal_pricing_failed", error=exc.message, retry_in_s=delay)
                await self._clock.sleep(delay)
                continue
            backoff.reset()
            if price != self._price:
                self._log.info(
                    "unit_price",
                    unit_price=price.unit_price,
                    unit=price.unit,
                    currency=price.currency,
                )
            self._price = price
            self._metrics.price_per_video_second.set(price.unit_price)
            # Waits for time to pass, not makes it pass (a sleep on a test's clock would).
            never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            await self._clock.wait([never], self._refresh)
