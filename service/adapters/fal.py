"""fal's queue API behind the ``VideoJobs`` port: httpx in, our error tree and job phases out.

One HTTP call per operation; the URLs fal returns at submit are used for status, result and
cancel, so namespaces and subpaths never need to be rebuilt here.

Retries (stamina, capped exponential backoff with jitter):
- status, result and cancel are idempotent: retried on transport errors, 408/409/429, and 5xx
  that did not come from the model (no ``x-fal-request-id`` header);
- submit is a POST that creates a paid job, so it is retried only when the job surely was not
  created: the connection could not be made (``httpx.ConnectError``) or fal answered 429.
  A submit whose answer was lost is *not* retried: it raises ``FalSubmitUnknown``, which the
  relay settles with fal's request history (or fails as ``fal_unavailable`` without one).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx
import stamina
from httpx_sse import SSEError, aconnect_sse

from service.core.ledger import FalRef
from service.errors import (
    FalError,
    FalJobFailed,
    FalRejected,
    FalResultExpired,
    FalSubmitUnknown,
    FalTimeout,
    FalUnauthorized,
    FalUnavailable,
)
from service.metrics import RelayMetrics, status_class
from service.ports import (
    FalLogLine,
    FalOutput,
    FalPhase,
    FalStatus,
    SubmitOptions,
)

_PHASES = {phase.value: phase for phase in FalPhase}
_NAMESPACES = ("workflows", "comfy")  # an endpoint id's first segment that is a namespace


class _NotSent(FalUnavailable):
    """The request surely did not create anything at fal: safe to send again, even a submit."""


class FalQueue:
    """``VideoJobs`` for one fal endpoint over an ``httpx.AsyncClient`` the caller owns."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        endpoint: str,
        metrics: RelayMetrics,
        attempts: int = 5,
        retry_timeout: float = 60.0,
        webhook_url: str | None = None,
        with_logs: bool = False,
        output_ttl_s: int | None = None,
        store_io: bool = True,
    ) -> None:
        self._http = http
        # What fal keeps of every job: its output files' lifetime, and whether it stores the
        # request's JSON payloads at all (README "Output storage").
        self._storage_headers: dict[str, str] = {}
        if output_ttl_s is not None:
            self._storage_headers["X-Fal-Object-Lifecycle-Preference"] = json.dumps(
                {"expiration_duration_seconds": output_ttl_s}
            )
        if not store_io:
            self._storage_headers["X-Fal-Store-IO"] = "0"
        # fal's log lines are asked for only when someone reads them (progress events).
        self._logs = "1" if with_logs else "0"
        self._submit_url = f"{base_url.rstrip('/')}/{endpoint.strip('/')}"
        # Status, result and cancel URLs name the app without its subpath ([ns/]owner/alias).
        segments = endpoint.strip("/").split("/")
        width = 3 if segments[0] in _NAMESPACES else 2
        self._requests_url = f"{base_url.rstrip('/')}/{'/'.join(segments[:width])}/requests"
        # fal POSTs the job's outcome there when it completes (RELAY_WATCH_MODE=webhook).
        self._submit_params = {"fal_webhook": webhook_url} if webhook_url else None
        self._metrics = metrics
        self._attempts = attempts
        self._retry_timeout = retry_timeout

    async def submit(
        self, arguments: Mapping[str, Any], options: SubmitOptions | None = None
    ) -> FalRef:
        headers = {**submit_headers(options), **self._storage_headers}
        try:
            async for attempt in stamina.retry_context(
                on=_not_sent, attempts=self._attempts, timeout=self._retry_timeout
            ):
                with attempt:
                    body, _headers = await self._call(
                        "submit",
                        "POST",
                        self._submit_url,
                        json=dict(arguments),
                        headers=headers,
                        params=self._submit_params,
                    )
        except _NotSent:
            raise
        except FalUnavailable as exc:
            # Sent, and no answer we can trust: fal may have created the job.
            raise FalSubmitUnknown(
                exc.message, details=exc.details, status_code=exc.status_code
            ) from None
        try:
            return FalRef(
                request_id=str(body["request_id"]),
                status_url=str(body["status_url"]),
                response_url=str(body["response_url"]),
                cancel_url=str(body["cancel_url"]),
            )
        except (KeyError, TypeError) as exc:
            raise FalSubmitUnknown(f"fal's submit answer lacks {exc}") from None

    def ref_for(self, fal_request_id: str) -> FalRef:
        """The URLs of a job known only by its fal request id (found in fal's request
        history), built as fal's own clients build them."""
        url = f"{self._requests_url}/{fal_request_id}"
        return FalRef(
            request_id=fal_request_id,
            status_url=f"{url}/status",
            response_url=url,
            cancel_url=f"{url}/cancel",
        )

    async def status(self, job: FalRef) -> FalStatus:
        body, _headers = await self._idempotent(
            "status", "GET", job.status_url, params={"logs": self._logs}
        )
        return _status_from(body)

    async def stream(self, job: FalRef) -> AsyncIterator[FalStatus]:
        """One connection: ``{status_url}/stream`` sends a ``data: <status JSON>`` event per
        change (and keep-alive comments) and closes after COMPLETED.

        httpx-sse parses the events, so any event shape the SSE standard allows (a JSON split
        over several ``data:`` lines, CR line ends, ``id:``/``retry:`` fields) reads right. A
        2xx that is not ``text/event-stream`` (a proxy's page, a server without streams) is
        ``FalUnavailable``: the stream watcher counts it as a failed stream and, after a few,
        polls instead."""
        url = job.status_url.rstrip("/") + "/stream"
        try:
            async with aconnect_sse(
                self._http,
                "GET",
                url,
                params={"logs": self._logs},
                # fal sends a keep-alive comment every 15 s; silence beyond that is a drop.
                timeout=httpx.Timeout(30.0, read=45.0),
            ) as source:
                response = source.response
                self._metrics.fal_http.labels("stream", status_class(response.status_code)).inc()
                if not response.is_success:
                    await response.aread()
                    raise error_for(
                        "status", response.status_code, response.headers, json_body(response)
                    )
                # aclosing: a caller that stops at COMPLETED closes the parser with us.
                async with aclosing(source.aiter_sse()) as events:
                    async for event in events:
                        # An event with no data (only id: or retry:) carries no status.
                        if event.data:
                            body = event.json()
                            if isinstance(body, dict):
                                yield _status_from(body)
        except SSEError as exc:
            # httpx-sse's one error, raised before the first event when a 2xx is not an event
            # stream. It subclasses httpx.TransportError (hence caught first), but an answer
            # came: it is not counted as a transport error.
            raise FalUnavailable(f"fal's status stream is not an event stream: {exc}") from None
        except httpx.HTTPError as exc:
            self._metrics.fal_http.labels("stream", "error").inc()
            raise _transport_error(exc) from None
        except json.JSONDecodeError:
            raise FalUnavailable("fal's status stream sent something that is not JSON") from None

    async def result(self, job: FalRef) -> FalOutput:
        body, headers = await self._idempotent("result", "GET", job.response_url)
        output = _output_from(body, billable_units(headers))
        if output is None:
            raise FalJobFailed(
                "fal's result has no video url",
                details={"result": body},
                billable_units=billable_units(headers),
            )
        return output

    async def cancel(self, job: FalRef) -> None:
        try:
            await self._idempotent("cancel", "PUT", job.cancel_url)
        except FalRejected as exc:
            if exc.status_code != 400:  # 400 ALREADY_COMPLETED: nothing left to cancel
                raise

    # --- one HTTP call --------------------------------------------------------------------

    async def _idempotent(
        self, kind: str, method: str, url: str, **kw: Any
    ) -> tuple[dict[str, Any], httpx.Headers]:
        async for attempt in stamina.retry_context(
            on=_retryable, attempts=self._attempts, timeout=self._retry_timeout
        ):
            with attempt:
                return await self._call(kind, method, url, **kw)
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _call(
        self, kind: str, method: str, url: str, **kw: Any
    ) -> tuple[dict[str, Any], httpx.Headers]:
        """One HTTP call: fal's JSON object and the answer's headers (billing rides on them)."""
        try:
            response = await self._http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self._metrics.fal_http.labels(kind, "error").inc()
            raise _transport_error(exc) from None
        self._metrics.fal_http.labels(kind, status_class(response.status_code)).inc()
        body = json_body(response)
        if response.is_success:
            if not isinstance(body, dict):
                raise FalUnavailable(f"fal's {kind} answer is not a JSON object")
            return body, response.headers
        raise error_for(kind, response.status_code, response.headers, body)


def submit_headers(options: SubmitOptions | None) -> dict[str, str]:
    """fal's queue headers for a request's options (the names fal's own clients send)."""
    if options is None:
        return {}
    headers = {}
    # fal's queue knows normal and low only: our high is fal's normal (the relay's scheduler
    # is what puts it first).
    if options.priority in ("normal", "low"):
        headers["X-Fal-Queue-Priority"] = options.priority
    elif options.priority == "high":
        headers["X-Fal-Queue-Priority"] = "normal"
    if options.start_timeout_s is not None:
        headers["X-Fal-Request-Timeout"] = f"{options.start_timeout_s:g}"
    if options.runner_hint:
        headers["X-Fal-Runner-Hint"] = options.runner_hint
    return headers


def _not_sent(exc: Exception) -> bool | float:
    return _retryable(exc) if isinstance(exc, _NotSent) else False


def _transport_error(exc: httpx.HTTPError) -> FalError:
    """No answer from fal. Only a connection that was never made proves no job was created:
    httpx says ConnectError; under the aiohttp transport that arrives as a ConnectTimeout
    caused by aiohttp's ClientConnectorError (a dropped connection maps to ConnectTimeout too,
    so the cause is what tells them apart)."""
    if isinstance(exc, httpx.ConnectError) or isinstance(
        exc.__cause__, aiohttp.ClientConnectorError
    ):
        return _NotSent(f"cannot connect to fal: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return FalUnavailable(f"fal did not answer in time ({type(exc).__name__})")
    return FalUnavailable(f"HTTP error talking to fal: {type(exc).__name__}")


# The most we wait on fal's word (Retry-After) before the next attempt of one call.
_MAX_RETRY_AFTER_S = 60.0


def _retryable(exc: Exception) -> bool | float:
    """stamina's hook: whether to retry, or how long to wait when fal said (Retry-After)."""
    if not isinstance(exc, FalUnavailable):
        return False
    if exc.retry_after is not None:
        return min(_MAX_RETRY_AFTER_S, max(0.0, exc.retry_after))
    return True


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header as seconds: either delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _status_from(body: dict[str, Any]) -> FalStatus:
    phase = _PHASES.get(str(body.get("status")))
    if phase is None:
        raise FalUnavailable(f"fal reported an unknown status {body.get('status')!r}")
    metrics = body.get("metrics")
    inference = metrics.get("inference_time") if isinstance(metrics, dict) else None
    position = body.get("queue_position")
    logs = body.get("logs")
    return FalStatus(
        phase=phase,
        queue_position=position if isinstance(position, int) else None,
        error=_opt_str(body.get("error")),
        error_type=_opt_str(body.get("error_type")),
        inference_time=float(inference) if isinstance(inference, int | float) else None,
        logs=tuple(
            FalLogLine(
                message=str(line.get("message", ""))[:2000],
                level=_opt_str(line.get("level")),
                timestamp=_opt_str(line.get("timestamp")),
            )
            for line in (logs if isinstance(logs, list) else [])
            if isinstance(line, dict)
        ),
    )


def _output_from(body: Any, units: float | None = None) -> FalOutput | None:
    """The Lynx output in a result (or a webhook's payload): its video, if it has a URL."""
    video = body.get("video") if isinstance(body, dict) else None
    if not isinstance(video, dict) or not isinstance(video.get("url"), str):
        return None
    seed = body.get("seed")
    return FalOutput(
        video=video, seed=seed if isinstance(seed, int) else None, billable_units=units
    )


def billable_units(headers: Mapping[str, str]) -> float | None:
    """``X-Fal-Billable-Units``: what fal bills for the job, in the endpoint's unit (None when
    absent or not a number)."""
    value = headers.get("x-fal-billable-units")
    if value is None:
        return None
    try:
        units = float(value)
    except ValueError:
        return None
    return units if math.isfinite(units) and units >= 0 else None


def parse_webhook(body: Mapping[str, Any]) -> tuple[FalStatus, FalOutput | None]:
    """fal's webhook body: {"status": "OK", "payload": output} or {"status": "ERROR", ...}.

    An OK payload with a video is the result itself; anything else is fetched from fal,
    whose answer to the result call carries the status code the error mapping needs.
    """
    payload = body.get("payload")
    if body.get("status") == "OK":
        output = _output_from(payload)
        if output is not None:
            return FalStatus(FalPhase.COMPLETED), output
    error_type = payload.get("error_type") if isinstance(payload, dict) else None
    return FalStatus(
        FalPhase.COMPLETED, error=_opt_str(body.get("error")), error_type=_opt_str(error_type)
    ), None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def json_body(response: httpx.Response) -> Any:
    """An answer's JSON, or the start of its text when it is not JSON (a gateway's page)."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:2000]


def error_for(kind: str, status: int, headers: Mapping[str, str], body: Any) -> FalError:
    """Translate a non-2xx answer from fal into our error tree.

    A header ``x-fal-request-id`` means the answer is the model's own (its status code and
    body); without it the answer came from fal's gateway. That is the distinction fal's own
    clients make between a job that failed and a call worth repeating.
    """
    detail = body.get("detail") if isinstance(body, dict) else body
    error_type = (body.get("error_type") if isinstance(body, dict) else None) or headers.get(
        "x-fal-error-type"
    )
    from_model = "x-fal-request-id" in headers
    details = {"status_code": status, "detail": detail, "error_type": error_type}
    message = _summary(detail) or f"fal answered {status} to {kind}"
    wait = retry_after_seconds(headers.get("retry-after"), datetime.now(UTC))
    if status in (401, 403):
        return FalUnauthorized(
            f"fal refused the key: {message}", details=details, status_code=status
        )
    if status == 429 and kind == "submit":
        return _NotSent(
            f"fal is rate limiting: {message}",
            details=details,
            status_code=status,
            retry_after=wait,
        )
    timeout_type = headers.get("x-fal-request-timeout-type")
    if timeout_type or error_type in ("request_timeout", "startup_timeout"):
        # The job itself ran out of time at fal; a user-set start deadline is not worth a retry.
        return FalTimeout(
            message, details=details, status_code=status, retryable=timeout_type != "user"
        )
    if status in (408, 409, 429) or (status >= 500 and not from_model):
        return FalUnavailable(message, details=details, status_code=status, retry_after=wait)
    if status == 404 and kind != "submit":
        return FalResultExpired(
            f"fal no longer knows the job: {message}", details=details, status_code=status
        )
    if 400 <= status < 500:
        # A 422 from the model may be billed: the header says what it cost.
        return FalRejected(
            message, details=details, status_code=status, billable_units=billable_units(headers)
        )
    retryable_header = headers.get("x-fal-retryable")
    return FalJobFailed(
        message,
        details=details,
        status_code=status,
        retryable=retryable_header is not None and retryable_header.lower() == "true",
        billable_units=billable_units(headers),
    )


def _summary(detail: Any) -> str:
    """fal's detail as one line: a string as is, a FastAPI error list as 'field: message; ...'."""
    if isinstance(detail, str):
        return detail[:500]
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        return "; ".join(parts)
    return ""
