"""fal's request history (Platform API) behind the ``FalHistory`` port: httpx in, history items
and our error tree out.

One question: which requests did fal receive for our endpoint in a window of submit times?
``GET {api_url}/models/requests/by-endpoint?endpoint_id=..&start=..&end=..&expand=payloads``,
pages (of ``page_size``, 100 by default: fal's largest) followed through ``next_cursor`` while
``has_more``, at most ``max_pages`` of them.

What the paging does not promise, so this module does not assume it:
- a later page may repeat a request an earlier page listed (fal's order is latest end first,
  cut page by page as it is when each page is asked for): each ``request_id`` is kept once,
  its latest word winning, any field that word lacks taken from the earlier one;
- a request that ends during the pass may move onto a page already read and be missed by this
  pass: a caller that needs it asks again later (a new pass finds it);
- fields may be missing or null: an item without a ``request_id`` is dropped, any other field
  fal left out is None.

Every call is a GET, so every failure that may pass is retried (stamina, capped exponential
backoff with jitter, a Retry-After honoured): transport errors, 408, 429 and 5xx, which end as
``FalUnavailable``. 401/403 are ``FalUnauthorized``; any other 4xx (an unknown endpoint or
route, a refused query) is ``FalHistoryRefused``, and more pages than allowed is
``FalHistoryIncomplete``: the caller goes on without the history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import stamina

from service.adapters.fal import json_body, retry_after_seconds
from service.errors import (
    FalError,
    FalHistoryIncomplete,
    FalHistoryRefused,
    FalUnauthorized,
    FalUnavailable,
)
from service.metrics import RelayMetrics, status_class
from service.ports import FalHistoryItem

HISTORY_PATH = "/models/requests/by-endpoint"
PAGE_LIMIT = 100  # the Platform API's largest page
DEFAULT_MAX_PAGES = 50
# The most we wait on fal's word (Retry-After) before the next attempt of one call.
_MAX_RETRY_AFTER_S = 60.0
_METRIC = "history"


class FalRequestHistory:
    """``FalHistory`` for one fal endpoint over an ``httpx.AsyncClient`` the caller owns (it
    carries the ``Authorization: Key`` header, as for the queue)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_url: str,
        endpoint: str,
        metrics: RelayMetrics,
        max_pages: int = DEFAULT_MAX_PAGES,
        page_size: int = PAGE_LIMIT,
        attempts: int = 5,
        retry_timeout: float = 60.0,
    ) -> None:
        if max_pages < 1:
            raise ValueError(f"max_pages must be at least 1, got {max_pages}")
        if not 1 <= page_size <= PAGE_LIMIT:
            raise ValueError(f"page_size must be from 1 to {PAGE_LIMIT}, got {page_size}")
        self._http = http
        self._url = api_url.rstrip("/") + HISTORY_PATH
        self._endpoint = endpoint.strip("/")
        self._metrics = metrics
        self._max_pages = max_pages
        self._page_size = page_size
        self._attempts = attempts
        self._retry_timeout = retry_timeout

    async def requests(self, since: datetime, until: datetime) -> list[FalHistoryItem]:
        if since.tzinfo is None or until.tzinfo is None:
            raise ValueError("since and until must be timezone-aware")
        if until <= since:
            return []
        query = {
            "endpoint_id": self._endpoint,
            "start": _iso(since),
            "end": _iso(until),
            "expand": "payloads",
            "limit": str(self._page_size),
        }
        seen: dict[str, FalHistoryItem] = {}  # first-seen order, latest word
        cursor: str | None = None
        for _ in range(self._max_pages):
            page = await self._page(query if cursor is None else {**query, "cursor": cursor})
            for raw in _items_of(page):
                item = _item_from(raw)
                if item is not None:
                    earlier = seen.get(item.request_id)
                    seen[item.request_id] = item if earlier is None else _merge(earlier, item)
            cursor = _next_cursor(page)
            if cursor is None:
                return list(seen.values())
        raise FalHistoryIncomplete(
            f"fal's request history has more than {self._max_pages} pages of "
            f"{self._page_size} between {query['start']} and {query['end']}",
            details={"max_pages": self._max_pages, "listed": len(seen)},
        )

    async def _page(self, params: Mapping[str, str]) -> dict[str, Any]:
        async for attempt in stamina.retry_context(
            on=retryable_call, attempts=self._attempts, timeout=self._retry_timeout
        ):
            with attempt:
                return await self._call(params)
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _call(self, params: Mapping[str, str]) -> dict[str, Any]:
        try:
            response = await self._http.get(self._url, params=params)
        except httpx.HTTPError as exc:
            self._metrics.fal_http.labels(_METRIC, "error").inc()
            raise FalUnavailable(
                f"no answer from fal's request history: {type(exc).__name__}"
            ) from None
        self._metrics.fal_http.labels(_METRIC, status_class(response.status_code)).inc()
        body = json_body(response)
        if response.is_success:
            if not isinstance(body, dict):
                raise FalUnavailable("fal's request history answered with no JSON object")
            return body
        raise history_error_for(response.status_code, response.headers, body)


def history_error_for(
    status: int, headers: Mapping[str, str], body: Any, what: str = "request history"
) -> FalError:
    """Translate a non-2xx answer of the Platform API (``{"error": {"type", "message", ...}}``)
    into our error tree; ``what`` names the API in messages."""
    error = body.get("error") if isinstance(body, dict) else None
    error_type = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = f"fal's {what} answered {status}"
    details = {"status_code": status, "error_type": error_type, "message": message[:500]}
    text = message[:500]
    if status in (401, 403):
        return FalUnauthorized(
            f"fal's {what} refused the key: {text}", details=details, status_code=status
        )
    if status in (408, 429) or status >= 500:
        wait = retry_after_seconds(headers.get("retry-after"), datetime.now(UTC))
        return FalUnavailable(text, details=details, status_code=status, retry_after=wait)
    return FalHistoryRefused(
        f"fal's {what} cannot answer: {text}", details=details, status_code=status
    )


def retryable_call(exc: Exception) -> bool | float:
    """stamina's hook: whether to retry, or how long to wait when fal said (Retry-After)."""
    if not isinstance(exc, FalUnavailable) or not exc.retryable:
        return False
    if exc.retry_after is not None:
        return min(_MAX_RETRY_AFTER_S, max(0.0, exc.retry_after))
    return True


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _items_of(page: Mapping[str, Any]) -> list[Any]:
    items = page.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise FalUnavailable("fal's request history sent items that are not a list")
    return items


def _next_cursor(page: Mapping[str, Any]) -> str | None:
    """The cursor of the next page, or None when this was the last. ``has_more`` without a
    cursor cannot be followed; a cursor without ``has_more`` true is not followed."""
    cursor = page.get("next_cursor")
    if page.get("has_more") is True and isinstance(cursor, str) and cursor:
        return cursor
    return None


def _item_from(raw: Any) -> FalHistoryItem | None:
    if not isinstance(raw, dict):
        return None
    request_id = raw.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        return None
    code = raw.get("status_code")
    json_input, json_output = raw.get("json_input"), raw.get("json_output")
    return FalHistoryItem(
        request_id=request_id,
        sent_at=_moment(raw.get("sent_at")),
        ended_at=_moment(raw.get("ended_at")),
        status_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        json_input=json_input if isinstance(json_input, dict) else None,
        json_output=json_output if isinstance(json_output, dict) else None,
    )


def _moment(value: Any) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (no zone is UTC); None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _merge(earlier: FalHistoryItem, later: FalHistoryItem) -> FalHistoryItem:
    """The later word on a request, with what it lacks taken from the earlier one."""
    missing = {
        field.name: getattr(earlier, field.name)
        for field in fields(later)
        if getattr(later, field.name) is None
    }
    return replace(later, **missing)
