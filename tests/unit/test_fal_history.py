"""The request history seam: fal's Platform API pages become history items, once each, and its
errors become our error tree.

Driven through ``httpx.MockTransport``: a fake Platform API that answers from a list of pages or
answers, asserting outcomes (the items, the errors, the calls it saw).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from service.adapters.fal_history import (
    PAGE_LIMIT,
    FalRequestHistory,
    history_error_for,
    retryable_call,
)
from service.errors import (
    FalHistoryIncomplete,
    FalHistoryRefused,
    FalUnauthorized,
    FalUnavailable,
)
from service.metrics import RelayMetrics
from service.ports import FalHistoryItem

API = "https://api.fal.test/v1"
SINCE = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
UNTIL = SINCE + timedelta(minutes=10)
INPUT = {"image_url": "https://example.com/subject.png", "prompt": "a person waves"}
OUTPUT = {"video": {"url": "https://v/1.mp4"}, "seed": 7}

Answer = httpx.Response | Exception | dict[str, Any]


def item(request_id: str, **fields: Any) -> dict[str, Any]:
    """An item as fal lists it with ``expand=payloads``, ended with 200 unless told."""
    return {
        "request_id": request_id,
        "endpoint_id": "fal-ai/lynx",
        "sent_at": "2026-11-25T12:01:00.000000Z",
        "started_at": "2026-11-25T12:01:01.000000Z",
        "ended_at": "2026-11-25T12:01:07.500000Z",
        "status_code": 200,
        "duration": 7.5,
        "json_input": INPUT,
        "json_output": OUTPUT,
        **fields,
    }


def page(*items: dict[str, Any], cursor: str | None = None) -> dict[str, Any]:
    return {"items": list(items), "next_cursor": cursor, "has_more": cursor is not None}


class FakeApi:
    """Answers each call with the next of ``answers`` (a body is a 200); records the calls."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    def params(self, index: int) -> dict[str, str]:
        return dict(self.seen[index].url.params)


def history(
    handler: Callable[[httpx.Request], httpx.Response], **options: Any
) -> tuple[FalRequestHistory, RelayMetrics]:
    metrics = RelayMetrics()
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    adapter = FalRequestHistory(
        http, api_url=API + "/", endpoint="fal-ai/lynx", metrics=metrics, **options
    )
    return adapter, metrics


def calls(metrics: RelayMetrics, status_class: str) -> float:
    value = metrics.registry.get_sample_value(
        "lynx_relay_fal_http_requests_total",
        {"endpoint": "history", "status_class": status_class},
    )
    return value or 0.0


async def test_one_page_asks_for_the_window_with_payloads_and_reads_every_field() -> None:
    api = FakeApi(page(item("r-1")))
    adapter, metrics = history(api)
    (listed,) = await adapter.requests(SINCE, UNTIL)
    assert listed == FalHistoryItem(
        request_id="r-1",
        sent_at=datetime(2026, 11, 25, 12, 1, tzinfo=UTC),
        ended_at=datetime(2026, 11, 25, 12, 1, 7, 500000, tzinfo=UTC),
        status_code=200,
        json_input=INPUT,
        json_output=OUTPUT,
    )
    (request,) = api.seen
    assert (request.method, str(request.url.copy_with(query=None))) == (
        "GET",
        f"{API}/models/requests/by-endpoint",
    )
    assert api.params(0) == {
        "endpoint_id": "fal-ai/lynx",
        "start": "2026-11-25T12:00:00Z",
        "end": "2026-11-25T12:10:00Z",
        "expand": "payloads",
        "limit": str(PAGE_LIMIT),
    }
    assert calls(metrics, "2xx") == 1


async def test_the_window_is_sent_in_utc_whatever_zone_it_was_given_in() -> None:
    api = FakeApi(page())
    adapter, _ = history(api)
    plus_two = timezone(timedelta(hours=2))
    await adapter.requests(SINCE.astimezone(plus_two), UNTIL.astimezone(plus_two))
    assert (api.params(0)["start"], api.params(0)["end"]) == (
        "2026-11-25T12:00:00Z",
        "2026-11-25T12:10:00Z",
    )


async def test_an_empty_window_asks_nothing_and_a_naive_one_is_a_programming_error() -> None:
    api = FakeApi()
    adapter, _ = history(api)
    assert await adapter.requests(UNTIL, SINCE) == []
    assert await adapter.requests(SINCE, SINCE) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        await adapter.requests(SINCE.replace(tzinfo=None), UNTIL)
    assert api.seen == []


async def test_pages_are_followed_by_cursor_and_a_repeated_request_is_listed_once() -> None:
    """A later page may repeat a request pushed back meanwhile: one item each, in first-seen
    order, the later word winning (here: it ended between the two pages)."""
    running = item("r-2", ended_at=None, status_code=None, json_output=None)
    api = FakeApi(
        page(item("r-1"), running, cursor="Mg=="),
        page(item("r-2", status_code=422, json_output={"detail": []}), item("r-3"), cursor="Mw=="),
        page(item("r-1"), item("r-4")),
    )
    adapter, metrics = history(api)
    listed = await adapter.requests(SINCE, UNTIL)
    assert [x.request_id for x in listed] == ["r-1", "r-2", "r-3", "r-4"]
    assert (listed[1].status_code, listed[1].json_output) == (422, {"detail": []})
    assert "cursor" not in api.params(0)
    assert [api.params(i)["cursor"] for i in (1, 2)] == ["Mg==", "Mw=="]
    assert all(api.params(i)["start"] == "2026-11-25T12:00:00Z" for i in range(3))
    assert calls(metrics, "2xx") == 3


async def test_a_repeat_missing_a_field_keeps_what_the_earlier_word_said() -> None:
    api = FakeApi(
        page(item("r-1"), cursor="Mg=="),
        page({"request_id": "r-1", "status_code": 200}),
    )
    adapter, _ = history(api)
    (listed,) = await adapter.requests(SINCE, UNTIL)
    assert listed.json_input == INPUT
    assert listed.sent_at == datetime(2026, 11, 25, 12, 1, tzinfo=UTC)


async def test_missing_null_and_odd_fields_are_none_and_items_without_an_id_are_dropped() -> None:
    api = FakeApi(
        {
            "items": [
                {"request_id": "bare"},
                {
                    "request_id": "odd",
                    "sent_at": "yesterday",
                    "ended_at": 1764072067,
                    "status_code": "200",
                    "json_input": "not an object",
                    "json_output": [1, 2],
                },
                {"request_id": "naive", "sent_at": "2026-11-25T12:01:00", "status_code": True},
                {"request_id": None, "json_input": INPUT},
                {"json_input": INPUT},
                "r-9",
                None,
            ],
            # no next_cursor, no has_more: the last page
        }
    )
    adapter, _ = history(api)
    listed = await adapter.requests(SINCE, UNTIL)
    assert listed == [
        FalHistoryItem("bare"),
        FalHistoryItem("odd"),
        FalHistoryItem("naive", sent_at=datetime(2026, 11, 25, 12, 1, tzinfo=UTC)),
    ]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-items"),
        pytest.param({"items": None, "has_more": True}, id="null-items-more-without-cursor"),
        pytest.param({"items": [], "next_cursor": "Mg==", "has_more": False}, id="cursor-no-more"),
        pytest.param({"items": [], "next_cursor": "", "has_more": True}, id="empty-cursor"),
    ],
)
async def test_a_page_that_cannot_be_followed_ends_the_pass(body: dict[str, Any]) -> None:
    api = FakeApi(body)
    adapter, _ = history(api)
    assert await adapter.requests(SINCE, UNTIL) == []
    assert len(api.seen) == 1


async def test_more_pages_than_allowed_is_an_incomplete_answer_not_a_partial_one() -> None:
    """A partial list cannot say a request is absent, so it is not returned."""
    endless = FakeApi(*(page(item(f"r-{n}"), cursor=f"c{n}") for n in range(10)))
    adapter, _ = history(endless, max_pages=3, page_size=7)
    with pytest.raises(FalHistoryIncomplete) as caught:
        await adapter.requests(SINCE, UNTIL)
    assert len(endless.seen) == 3
    assert endless.params(0)["limit"] == "7"
    assert caught.value.details == {"max_pages": 3, "listed": 3}
    assert isinstance(caught.value, FalHistoryRefused)
    assert (caught.value.code, caught.value.retryable) == ("fal_rejected", False)
    with pytest.raises(ValueError, match="max_pages"):
        history(endless, max_pages=0)
    for size in (0, PAGE_LIMIT + 1):
        with pytest.raises(ValueError, match="page_size"):
            history(endless, page_size=size)


async def test_rate_limits_server_errors_and_transport_errors_are_retried() -> None:
    api = FakeApi(
        httpx.Response(
            429,
            headers={"Retry-After": "2"},
            json={"error": {"type": "rate_limited", "message": "slow down"}},
        ),
        httpx.Response(502, text="bad gateway"),
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        httpx.Response(408),
        page(item("r-1"), cursor="Mg=="),
        httpx.Response(503, json={"error": {"type": "server_error", "message": "busy"}}),
        page(item("r-2")),
    )
    adapter, metrics = history(api, attempts=10)
    listed = await adapter.requests(SINCE, UNTIL)
    assert [x.request_id for x in listed] == ["r-1", "r-2"]
    assert api.answers == []
    assert api.params(7)["cursor"] == "Mg=="  # the retry asks for the same page again
    assert [calls(metrics, c) for c in ("2xx", "4xx", "5xx", "error")] == [2, 2, 2, 2]


async def test_retries_give_up_as_fal_unavailable() -> None:
    api = FakeApi(*(httpx.Response(500, text="oops") for _ in range(3)))
    adapter, _ = history(api, attempts=3)
    with pytest.raises(FalUnavailable) as caught:
        await adapter.requests(SINCE, UNTIL)
    assert (caught.value.code, caught.value.retryable, caught.value.status_code) == (
        "fal_unavailable",
        True,
        500,
    )
    assert api.answers == []


def platform_error(error_type: str, message: str | None = None) -> dict[str, Any]:
    error = {"type": error_type, "docs_url": "https://docs.fal.ai/platform-apis"}
    return {"error": error if message is None else {**error, "message": message}}


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (401, platform_error("authorization_error"), FalUnauthorized, "unauthorized"),
        (403, platform_error("authorization_error"), FalUnauthorized, "unauthorized"),
        (
            404,
            platform_error("not_found", "Endpoint 'x/y' not found"),
            FalHistoryRefused,
            "fal_rejected",
        ),
        (422, platform_error("validation_error", "bad limit"), FalHistoryRefused, "fal_rejected"),
        (400, "<html>bad request</html>", FalHistoryRefused, "fal_rejected"),
    ],
)
async def test_refusals_are_not_retried_and_keep_fals_words(
    status: int, body: Any, error: type[Exception], code: str
) -> None:
    answer = (
        httpx.Response(status, json=body)
        if isinstance(body, dict)
        else httpx.Response(status, text=body)
    )
    api = FakeApi(answer)
    adapter, metrics = history(api)
    with pytest.raises(error) as caught:
        await adapter.requests(SINCE, UNTIL)
    assert len(api.seen) == 1
    raised = caught.value
    assert isinstance(raised, FalUnauthorized | FalHistoryRefused)
    assert (raised.code, raised.retryable, raised.status_code) == (code, False, status)
    assert isinstance(raised.details, dict)
    if isinstance(body, dict):
        assert raised.details["error_type"] == body["error"]["type"]
        assert body["error"].get("message", "") in raised.message
    assert calls(metrics, "4xx") == 1


async def test_an_answer_that_is_not_a_page_is_retried_then_unavailable() -> None:
    api = FakeApi(
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(200, json=["not", "a", "page"]),
        {"items": "nope"},
    )
    adapter, _ = history(api, attempts=3)
    with pytest.raises(FalUnavailable, match="items"):
        await adapter.requests(SINCE, UNTIL)
    assert len(api.seen) == 3


def test_retry_after_is_honoured_and_capped() -> None:
    """stamina waits what fal said (testing mode skips the wait itself), at most a minute."""
    err = history_error_for(429, httpx.Headers({"retry-after": "3"}), {"error": {}})
    assert isinstance(err, FalUnavailable)
    assert err.retry_after == 3.0
    assert retryable_call(err) == 3.0
    long_wait = history_error_for(503, httpx.Headers({"retry-after": "600"}), None)
    assert retryable_call(long_wait) == 60.0
    assert retryable_call(FalUnavailable("x")) is True
    assert retryable_call(FalUnavailable("x", retryable=False)) is False
    assert retryable_call(FalHistoryRefused("x")) is False
    assert retryable_call(FalUnauthorized("x")) is False
