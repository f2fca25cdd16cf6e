"""The fal seam: fal's answers become job phases, outputs and our error tree.

Driven through ``httpx.MockTransport``: a fake fal that answers by URL, asserting outcomes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from service.adapters.fal import (
    FalQueue,
    _retryable,
    error_for,
    parse_webhook,
    retry_after_seconds,
    submit_headers,
)
from service.core.ledger import FalRef
from service.errors import (
    FalJobFailed,
    FalRejected,
    FalResultExpired,
    FalTimeout,
    FalUnauthorized,
    FalUnavailable,
)
from service.metrics import RelayMetrics
from service.ports import FalPhase, SubmitOptions

BASE = "https://queue.fal.test"
HANDLE = FalRef(
    request_id="f-1",
    status_url=f"{BASE}/fal-ai/lynx/requests/f-1/status",
    response_url=f"{BASE}/fal-ai/lynx/requests/f-1",
    cancel_url=f"{BASE}/fal-ai/lynx/requests/f-1/cancel",
)
SUBMITTED = {
    "request_id": "f-1",
    "status_url": HANDLE.status_url,
    "response_url": HANDLE.response_url,
    "cancel_url": HANDLE.cancel_url,
    "status": "IN_QUEUE",
    "queue_position": 0,
}


def queue(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[FalQueue, RelayMetrics]:
    metrics = RelayMetrics()
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return FalQueue(http, base_url=BASE, endpoint="fal-ai/lynx", metrics=metrics), metrics


def calls(metrics: RelayMetrics, endpoint: str, status_class: str) -> float:
    value = metrics.registry.get_sample_value(
        "lynx_relay_fal_http_requests_total",
        {"endpoint": endpoint, "status_class": status_class},
    )
    return value or 0.0


async def test_submit_posts_only_the_given_arguments_and_returns_fals_urls() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=SUBMITTED)

    fal, metrics = queue(handler)
    handle = await fal.submit({"prompt": "p", "image_url": "https://x"})
    assert handle == HANDLE
    assert seen[0].url == f"{BASE}/fal-ai/lynx"
    assert json.loads(seen[0].content) == {"prompt": "p", "image_url": "https://x"}
    assert calls(metrics, "submit", "2xx") == 1


async def test_submit_is_retried_only_when_no_job_can_exist() -> None:
    """A refused connection and a 429 are retried; a 503 after sending is not (the job may
    exist at fal, and a second submit would be paid twice)."""
    answers: list[Any] = [httpx.ConnectError("refused"), httpx.Response(429), SUBMITTED]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    fal, metrics = queue(handler)
    assert (await fal.submit({})).request_id == "f-1"
    assert answers == []
    assert [calls(metrics, "submit", c) for c in ("error", "4xx", "2xx")] == [1, 1, 1]

    attempts = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        return httpx.Response(503, text="upstream connect error")

    fal, _ = queue(flaky)
    with pytest.raises(FalUnavailable):
        await fal.submit({})
    assert attempts == 1


async def test_status_maps_fal_phases_and_is_retried_on_gateway_errors() -> None:
    answers = [
        httpx.Response(502, text="bad gateway"),
        httpx.Response(202, json={"status": "IN_QUEUE", "queue_position": 3, "logs": None}),
        httpx.Response(202, json={"status": "IN_PROGRESS", "logs": None}),
        httpx.Response(
            200,
            json={
                "status": "COMPLETED",
                "logs": None,
                "metrics": {"inference_time": 12.5},
                "error": "boom",
                "error_type": "runner_disconnected",
            },
        ),
    ]
    fal, metrics = queue(lambda request: answers.pop(0))
    queued = await fal.status(HANDLE)
    assert (queued.phase, queued.queue_position) == (FalPhase.QUEUED, 3)
    assert (await fal.status(HANDLE)).phase is FalPhase.RUNNING
    done = await fal.status(HANDLE)
    assert (done.phase, done.inference_time, done.error_type) == (
        FalPhase.COMPLETED,
        12.5,
        "runner_disconnected",
    )
    assert calls(metrics, "status", "5xx") == 1


async def test_result_returns_the_video_and_seed() -> None:
    output = {"video": {"url": "https://v.mp4", "width": 1280}, "seed": 7}
    fal, _ = queue(lambda request: httpx.Response(200, json=output))
    result = await fal.result(HANDLE)
    assert (result.video["url"], result.seed) == ("https://v.mp4", 7)


async def test_result_without_a_video_is_a_failed_job() -> None:
    fal, _ = queue(lambda request: httpx.Response(200, json={"seed": 1}))
    with pytest.raises(FalJobFailed, match="no video"):
        await fal.result(HANDLE)


async def test_cancel_of_a_finished_job_is_not_an_error() -> None:
    fal, _ = queue(lambda request: httpx.Response(400, json={"status": "ALREADY_COMPLETED"}))
    await fal.cancel(HANDLE)


MODEL = {"x-fal-request-id": "f-1"}


@pytest.mark.parametrize(
    ("kind", "status", "headers", "body", "error", "retryable"),
    [
        ("submit", 401, {}, {"detail": "No key"}, FalUnauthorized, False),
        ("status", 403, {}, {"detail": "Forbidden"}, FalUnauthorized, False),
        (
            "result",
            422,
            MODEL,
            {
                "detail": [
                    {
                        "loc": ["body", "prompt"],
                        "msg": "field required",
                        "type": "value_error.missing",
                    }
                ]
            },
            FalRejected,
            False,
        ),
        ("result", 500, MODEL, {"detail": "Internal Server Error"}, FalJobFailed, False),
        (
            "result",
            503,
            {**MODEL, "x-fal-retryable": "true"},
            {"detail": "Runner disconnected", "error_type": "runner_disconnected"},
            FalJobFailed,
            True,
        ),
        (
            "result",
            504,
            {**MODEL, "x-fal-request-timeout-type": "user"},
            {"detail": "Request timed out", "error_type": "request_timeout"},
            FalTimeout,
            False,
        ),
        ("status", 502, {}, "<html>nginx</html>", FalUnavailable, True),
        ("status", 429, {}, {"detail": "slow down"}, FalUnavailable, True),
        ("result", 404, {}, {"detail": "Request not found"}, FalResultExpired, False),
        ("submit", 422, {}, {"detail": "bad"}, FalRejected, False),
    ],
)
def test_error_translation(
    kind: str, status: int, headers: dict[str, str], body: Any, error: type, retryable: bool
) -> None:
    translated = error_for(kind, status, httpx.Headers(headers), body)
    assert type(translated) is error
    assert translated.retryable is retryable
    assert translated.details["status_code"] == status


def test_field_errors_are_summarised_without_the_body_prefix() -> None:
    detail = [{"loc": ["body", "image_url"], "msg": "Failed to download image", "type": "x"}]
    err = error_for("result", 422, httpx.Headers(MODEL), {"detail": detail})
    assert err.message == "image_url: Failed to download image"
    assert err.details["detail"] == detail


def test_request_options_become_fals_queue_headers() -> None:
    assert submit_headers(None) == {}
    assert submit_headers(
        SubmitOptions(priority="low", start_timeout_s=30.0, runner_hint="eu")
    ) == {
        "X-Fal-Queue-Priority": "low",
        "X-Fal-Request-Timeout": "30",
        "X-Fal-Runner-Hint": "eu",
    }


def test_retry_after_is_honoured_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("2.5", now) == 2.5
    assert retry_after_seconds("Wed, 25 Nov 2026 12:00:07 GMT", now) == 7.0
    assert retry_after_seconds("soon", now) is None
    err = error_for("status", 429, httpx.Headers({"retry-after": "3"}), {"detail": "slow"})
    assert isinstance(err, FalUnavailable)
    assert _retryable(err) == 3.0
    assert _retryable(FalUnavailable("x")) is True
    assert _retryable(FalJobFailed("x")) is False


@pytest.mark.parametrize(
    ("body", "error", "error_type", "video_url"),
    [
        pytest.param(
            {"status": "OK", "payload": {"video": {"url": "https://v/1.mp4"}, "seed": 7}},
            None,
            None,
            "https://v/1.mp4",
            id="ok-with-video-is-the-result",
        ),
        pytest.param(
            {"status": "OK", "payload": {"images": []}},
            None,
            None,
            None,
            id="ok-without-video-is-fetched",
        ),
        pytest.param(
            {"status": "ERROR", "error": "boom", "payload": {"error_type": "runner_crash"}},
            "boom",
            "runner_crash",
            None,
            id="error-carries-fals-words",
        ),
        pytest.param({"status": "ERROR"}, None, None, None, id="bare-error"),
    ],
)
def test_a_webhook_body_is_parsed_at_the_seam(
    body: dict[str, Any], error: str | None, error_type: str | None, video_url: str | None
) -> None:
    """fal's webhook is parsed here, not in the relay: a completed status, fal's error words,
    and the output only when the webhook carries a video (else the result is fetched)."""
    status, output = parse_webhook(body)
    assert status.phase is FalPhase.COMPLETED
    assert (status.error, status.error_type) == (error, error_type)
    assert (output.video["url"] if output else None) == video_url
    if output is not None:
        assert output.seed == 7
