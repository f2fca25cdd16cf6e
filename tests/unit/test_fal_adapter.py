"""The fal seam: fal's answers become job phases, outputs and our error tree.

Driven through ``httpx.MockTransport``: a fake fal that answers by URL, asserting outcomes. The
status stream is read over real loopback sockets too, once per RELAY_FAL_HTTP_TRANSPORT.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiohttp import web

from service.adapters.fal import (
    FalQueue,
    _retryable,
    error_for,
    parse_webhook,
    retry_after_seconds,
    submit_headers,
)
from service.app import fal_http_client
from service.config import load_settings
from service.core.ledger import FalRef
from service.errors import (
    FalError,
    FalJobFailed,
    FalRejected,
    FalResultExpired,
    FalTimeout,
    FalUnauthorized,
    FalUnavailable,
)
from service.metrics import RelayMetrics
from service.ports import FalPhase, FalStatus, SubmitOptions

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


async def test_fals_copies_lifetime_and_payload_storage_are_asked_for_on_submit() -> None:
    """RELAY_FAL_OUTPUT_TTL_S and RELAY_FAL_STORE_IO=false become fal's headers on every
    submit; by default neither is sent (fal's own defaults hold)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=SUBMITTED)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    metrics = RelayMetrics()
    kept = FalQueue(
        http,
        base_url=BASE,
        endpoint="fal-ai/lynx",
        metrics=metrics,
        output_ttl_s=3600,
        store_io=False,
    )
    plain = FalQueue(http, base_url=BASE, endpoint="fal-ai/lynx", metrics=metrics)
    await kept.submit({"prompt": "p", "image_url": "https://x"})
    await plain.submit({"prompt": "p", "image_url": "https://x"})
    lifecycle = json.loads(seen[0].headers["X-Fal-Object-Lifecycle-Preference"])
    assert lifecycle == {"expiration_duration_seconds": 3600}
    assert seen[0].headers["X-Fal-Store-IO"] == "0"
    assert "X-Fal-Object-Lifecycle-Preference" not in seen[1].headers
    assert "X-Fal-Store-IO" not in seen[1].headers


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


# --- the status stream (server-sent events) ---------------------------------------------------

IN_QUEUE = {"status": "IN_QUEUE", "queue_position": 2, "logs": None}
IN_PROGRESS = {
    "status": "IN_PROGRESS",
    "logs": [{"message": "step 1", "level": "INFO", "timestamp": "2026-11-25T12:00:00Z"}],
}
COMPLETED = {"status": "COMPLETED", "logs": None, "metrics": {"inference_time": 12.5}}
EVENT_STREAM = {"Content-Type": "text/event-stream"}


def sse(*statuses: dict[str, Any]) -> list[bytes]:
    """Each status as fal sends it: one ``data:`` line and a blank line, a chunk each."""
    return [f"data: {json.dumps(s)}\n\n".encode() for s in statuses]


def streamed(
    chunks: Iterable[bytes], *, fail_with: Exception | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    """A fake fal whose status stream sends ``chunks`` one by one (then ``fail_with``)."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
        if fail_with is not None:
            raise fail_with

    return lambda request: httpx.Response(200, headers=EVENT_STREAM, content=body())


async def statuses(fal: FalQueue) -> list[tuple[FalPhase, int | None]]:
    return [(s.phase, s.queue_position) async for s in fal.stream(HANDLE)]


async def read_into(got: list[FalPhase], stream: AsyncIterator[FalStatus]) -> None:
    """Read a stream's phases into ``got``, which keeps them when the stream raises."""
    async for status in stream:
        got.append(status.phase)


async def test_the_stream_yields_each_status_event_and_passes_over_keep_alives() -> None:
    """Events become statuses in order, with their logs and metrics; keep-alive comments and
    events without data (``retry:``) are not statuses. The stream is asked for with the
    event-stream Accept header, fal's logs flag and the stream's own timeouts."""
    seen: list[httpx.Request] = []
    chunks = [
        b"retry: 3000\n\n",
        *sse(IN_QUEUE),
        b": keep-alive\n\n",
        *sse(IN_PROGRESS, COMPLETED),
    ]
    serve = streamed(chunks)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return serve(request)

    fal, metrics = queue(handler)
    phases = [s async for s in fal.stream(HANDLE)]
    assert [(s.phase, s.queue_position) for s in phases] == [
        (FalPhase.QUEUED, 2),
        (FalPhase.RUNNING, None),
        (FalPhase.COMPLETED, None),
    ]
    assert phases[1].logs[0].message == "step 1"
    assert phases[2].inference_time == 12.5
    request = seen[0]
    assert request.url == f"{HANDLE.status_url}/stream?logs=0"
    assert request.headers["accept"] == "text/event-stream"
    assert request.extensions["timeout"] == {
        "connect": 30.0,
        "read": 45.0,
        "write": 30.0,
        "pool": 30.0,
    }
    assert calls(metrics, "stream", "2xx") == 1


async def test_the_stream_reads_events_however_the_bytes_are_cut() -> None:
    """An event split over chunks, a JSON object split over ``data:`` lines and CRLF line ends
    are all the same status event to the SSE standard."""
    queued, completed = json.dumps(IN_QUEUE), json.dumps(COMPLETED)
    half = len(queued) // 2
    chunks = [
        f"data: {queued[:half]}".encode(),
        f"{queued[half:]}\n".encode(),
        b"\n",
        b'data: {"status":\r\ndata: "IN_PROGRESS"}\r\n\r\n',
        f"data:{completed}\r\n\r\n".encode(),
    ]
    fal, _ = queue(streamed(chunks))
    assert await statuses(fal) == [
        (FalPhase.QUEUED, 2),
        (FalPhase.RUNNING, None),
        (FalPhase.COMPLETED, None),
    ]


async def test_a_stream_that_is_not_an_event_stream_is_fal_unavailable() -> None:
    """A 2xx that is not ``text/event-stream`` (a proxy's page, the plain status) is not read
    as events: it is a retryable ``FalUnavailable`` naming what came, so the stream watcher
    counts a failed stream and falls back to polling. The answer itself was a 2xx."""
    fal, metrics = queue(lambda request: httpx.Response(200, json=COMPLETED))
    with pytest.raises(FalUnavailable, match="application/json") as caught:
        await statuses(fal)
    assert caught.value.retryable is True
    assert (calls(metrics, "stream", "2xx"), calls(metrics, "stream", "error")) == (1, 0)


@pytest.mark.parametrize(
    ("status", "body", "error", "retryable"),
    [
        (404, {"detail": "Request not found"}, FalResultExpired, False),
        (401, {"detail": "No key"}, FalUnauthorized, False),
        (503, "upstream connect error", FalUnavailable, True),
    ],
)
async def test_a_refused_stream_is_translated_like_a_status_call(
    status: int, body: Any, error: type[FalError], retryable: bool
) -> None:
    """A non-2xx answer to the stream goes through the same translation as a status call
    (our error and its retryable flag), counted by its status class; it is not retried here:
    the stream watcher decides."""
    content = {"json": body} if isinstance(body, dict) else {"text": body}
    fal, metrics = queue(lambda request: httpx.Response(status, **content))
    with pytest.raises(error) as caught:
        await statuses(fal)
    assert caught.value.retryable is retryable
    assert calls(metrics, "stream", f"{status // 100}xx") == 1


async def test_a_stream_that_drops_or_sends_garbage_is_fal_unavailable() -> None:
    """The statuses before a drop are kept; the drop (a read timeout: no keep-alive within
    45 s) and an event that is not JSON are both ``FalUnavailable``."""
    fal, metrics = queue(streamed(sse(IN_QUEUE), fail_with=httpx.ReadTimeout("silence")))
    got: list[FalPhase] = []
    with pytest.raises(FalUnavailable, match="ReadTimeout"):
        await read_into(got, fal.stream(HANDLE))
    assert got == [FalPhase.QUEUED]
    assert calls(metrics, "stream", "error") == 1

    fal, _ = queue(streamed([b"data: <html>\n\n"]))
    with pytest.raises(FalUnavailable, match="not JSON"):
        await statuses(fal)


# The same stream over real sockets, through the client production builds for each transport.


async def _events(request: web.Request) -> web.StreamResponse:
    """fal's status stream: events as separate writes, a keep-alive, closed after COMPLETED."""
    response = web.StreamResponse(headers=EVENT_STREAM)
    await response.prepare(request)
    for chunk in [*sse(IN_QUEUE, IN_PROGRESS), b": keep-alive\n\n", *sse(COMPLETED)]:
        await response.write(chunk)
        await asyncio.sleep(0)
    await response.write_eof()
    return response


async def _dropped(request: web.Request) -> web.StreamResponse:
    """One event, then the connection is cut mid-body."""
    response = web.StreamResponse(headers=EVENT_STREAM)
    await response.prepare(request)
    await response.write(sse(IN_QUEUE)[0])
    assert request.transport is not None
    request.transport.abort()
    return response


async def _plain(_request: web.Request) -> web.Response:
    return web.json_response(COMPLETED)


async def _gone(_request: web.Request) -> web.Response:
    return web.json_response({"detail": "Request not found"}, status=404)


@asynccontextmanager
async def fal_over(transport: str) -> AsyncIterator[tuple[FalQueue, str]]:
    """A local server with fal's status streams, and a ``FalQueue`` on ``transport`` for it
    (the client built as production builds it), with the server's base URL."""
    app = web.Application()
    for job_id, handler in {
        "events": _events,
        "dropped": _dropped,
        "plain": _plain,
        "gone": _gone,
    }.items():
        app.router.add_get(f"/fal-ai/lynx/requests/{job_id}/status/stream", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    settings = load_settings(
        {"FAL_KEY": "k", "RELAY_WATCH_MODE": "stream", "RELAY_FAL_HTTP_TRANSPORT": transport}
    )
    try:
        async with fal_http_client(settings) as http:
            yield (
                FalQueue(http, base_url=base, endpoint="fal-ai/lynx", metrics=RelayMetrics()),
                base,
            )
    finally:
        await runner.cleanup()


def job_at(base: str, job_id: str) -> FalRef:
    url = f"{base}/fal-ai/lynx/requests/{job_id}"
    return FalRef(
        request_id=job_id, status_url=f"{url}/status", response_url=url, cancel_url=f"{url}/cancel"
    )


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_the_stream_reads_the_same_over_either_transport(transport: str) -> None:
    """Over real sockets, with RELAY_FAL_HTTP_TRANSPORT=aiohttp or httpx: the events arrive as
    statuses; a cut connection, a 2xx that is not an event stream and a 404 become our
    errors, never the transport's own."""
    async with fal_over(transport) as (fal, base):
        phases = [s.phase async for s in fal.stream(job_at(base, "events"))]
        assert phases == [FalPhase.QUEUED, FalPhase.RUNNING, FalPhase.COMPLETED]

        got: list[FalPhase] = []
        with pytest.raises(FalUnavailable):
            await read_into(got, fal.stream(job_at(base, "dropped")))
        assert got == [FalPhase.QUEUED]

        with pytest.raises(FalUnavailable, match="not an event stream"):
            [s async for s in fal.stream(job_at(base, "plain"))]
        with pytest.raises(FalResultExpired):
            [s async for s in fal.stream(job_at(base, "gone"))]


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
