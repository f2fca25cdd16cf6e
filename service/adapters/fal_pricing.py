"""fal's unit price for our endpoint (Platform API) behind the ``FalPricing`` port.

``GET {api_url}/models/pricing?endpoint_id=..`` answers ``{"prices": [{"endpoint_id",
"unit_price", "unit", "currency"}], ...}``: the account's price (discounts included), which
is why it is asked rather than written into a setting. One GET, retried like the request
history's (stamina: transport errors, 408, 429, 5xx); errors are translated by the same
mapping (``history_error_for``): 401/403 ``FalUnauthorized``, another 4xx
``FalHistoryRefused`` (the caller keeps its fallback price).
"""

from __future__ import annotations

from typing import Any

import httpx
import stamina

from service.adapters.fal import json_body
from service.adapters.fal_history import history_error_for
from service.adapters.fal_history import retryable_call as retryable
from service.core.cost import Price
from service.errors import FalHistoryRefused, FalUnavailable
from service.metrics import RelayMetrics, status_class

PRICING_PATH = "/models/pricing"
_METRIC = "pricing"


class FalPricing:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_url: str,
        endpoint: str,
        metrics: RelayMetrics,
        attempts: int = 3,
        retry_timeout: float = 30.0,
    ) -> None:
        self._http = http
        self._url = api_url.rstrip("/") + PRICING_PATH
        self._endpoint = endpoint.strip("/")
        self._metrics = metrics
        self._attempts = attempts
        self._retry_timeout = retry_timeout

    async def price(self) -> Price:
        async for attempt in stamina.retry_context(
            on=retryable, attempts=self._attempts, timeout=self._retry_timeout
        ):
            with attempt:
                body = await self._call()
        return _price_from(body, self._endpoint)

    async def _call(self) -> dict[str, Any]:
        try:
            response = await self._http.get(self._url, params={"endpoint_id": self._endpoint})
        except httpx.HTTPError as exc:
            self._metrics.fal_http.labels(_METRIC, "error").inc()
            raise FalUnavailable(f"no answer from fal's pricing: {type(exc).__name__}") from None
        self._metrics.fal_http.labels(_METRIC, status_class(response.status_code)).inc()
        body = json_body(response)
        if response.is_success:
            if not isinstance(body, dict):
                raise FalUnavailable("fal's pricing answered with no JSON object")
            return body
        raise history_error_for(response.status_code, response.headers, body, "pricing")


def _price_from(body: dict[str, Any], endpoint: str) -> Price:
    prices = body.get("prices")
    for item in prices if isinstance(prices, list) else []:
        if not isinstance(item, dict) or item.get("endpoint_id") not in (endpoint, None):
            continue
        unit_price = item.get("unit_price")
        if (
            isinstance(unit_price, int | float)
            and not isinstance(unit_price, bool)
            and unit_price >= 0
        ):
            return Price(
                unit_price=float(unit_price),
                unit=str(item.get("unit") or "second"),
                currency=str(item.get("currency") or "USD"),
                from_fal=True,
            )
    raise FalHistoryRefused(f"fal's pricing lists no price for {endpoint}")
