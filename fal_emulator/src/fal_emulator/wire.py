"""fal's queue protocol on the wire: paths, auth, headers, and every response the emulator gives.

This module owns the mapping between a ``Job`` at a moment and fal's HTTP words: which route a
path is, whether an ``Authorization`` header is acceptable, which optional submit headers are
recorded, and the status code, JSON body and headers of each answer (``Reply``). It is pure; the
aiohttp layer in ``server.py`` only moves bytes. Shapes follow the team's fal queue protocol notes
(``fal-queue-protocol.md``); where they say "unconfirmed", the behaviour they state is implemented.

Billing on the wire: the result answer of a job that was billed (``Job.billed_units``, decided
when it completed, see ``jobs``) carries ``X-Fal-Billable-Units: <units>`` as a plain decimal
(``5.0625``), on every fetch, since the bill is per job, not per fetch: a success's 200 and,
when ``bill_user_errors`` is set, a refused input's 422. An answer that is not billed carries
*no* header rather than ``0`` (server errors, the model's 500/503, start timeouts, cancelled
jobs, injected gateway faults, 404s and "still in progress"), so a client that sees the header
knows it was charged. Status answers never carry it, and neither does the webhook's body: fal's
has no billing field that we know of, so the emulator invents none.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from fal_emulator.jobs import (
    OUTPUT_FILE_NAME,
    CancelOutcome,
    Job,
    Outcome,
    Phase,
)

NAMESPACES = ("workflows", "comfy")

RouteKind = Literal["submit", "status", "status_stream", "result", "cancel"]


@dataclass(frozen=True, slots=True)
class QueueRoute:
    """A parsed queue path. ``endpoint`` is ``[ns/]owner/alias``; ``subpath`` only on submit."""

    kind: RouteKind
    endpoint: str
    subpath: str | None = None
    request_id: str | None = None


def parse_queue_path(method: str, path: str) -> QueueRoute | None:
    """Which queue route ``method path`` is, or None. Trailing (and doubled) slashes are ignored.

    Submit is ``POST /{endpoint}[/subpath]``; the others are
    ``/{endpoint}/requests/{id}[/status[/stream] | /cancel]`` without the subpath, which is how
    fal_client (``AppId`` and ``from_request_id``) and the JS client build them.
    """
    segments = [segment for segment in path.split("/") if segment]
    width = 3 if segments and segments[0] in NAMESPACES else 2
    if len(segments) < width:
        return None
    endpoint = "/".join(segments[:width])
    rest = segments[width:]
    if method == "POST":
        return QueueRoute("submit", endpoint, subpath="/".join(rest) or None)
    if len(rest) < 2 or rest[0] != "requests":
        return None
    request_id, tail = rest[1], rest[2:]
    if method in ("GET", "HEAD"):
        if not tail:
            return QueueRoute("result", endpoint, request_id=request_id)
        if tail == ["status"]:
            return QueueRoute("status", endpoint, request_id=request_id)
        if tail == ["status", "stream"]:
            return QueueRoute("status_stream", endpoint, request_id=request_id)
    if method == "PUT" and tail == ["cancel"]:
        return QueueRoute("cancel", endpoint, request_id=request_id)
    return None


def authorized(header: str | None, expected_key: str | None) -> bool:
    """``Authorization: Key <key>``: the configured key, or any non-empty key when none is set."""
    if not header:
        return False
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "key" or not key:
        return False
    if expected_key is None:
        return True
    return hmac.compare_digest(key.encode(), expected_key.encode())


# The optional submit headers fal documents; recorded under these spellings when present.
RECORDED_HEADERS = (
    "X-Fal-Queue-Priority",
    "X-Fal-Runner-Hint",
    "X-Fal-Request-Timeout",
    "X-Fal-Request-Start-Timeout",
    "X-Fal-No-Retry",
    "X-Fal-Object-Lifecycle-Preference",
    "X-Fal-Store-IO",
)


def record_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The optional fal headers of a submit (``headers`` must look names up case-insensitively)."""
    return {name: headers[name] for name in RECORDED_HEADERS if name in headers}


# The start deadline's two names: fal's newer docs call it X-Fal-Request-Start-Timeout.
START_TIMEOUT_HEADERS = ("X-Fal-Request-Start-Timeout", "X-Fal-Request-Timeout")


def start_timeout(headers: Mapping[str, str]) -> float | None:
    """The submit's deadline to start, in seconds, or None when it sets none.

    ``X-Fal-Request-Start-Timeout`` (the newer name) or ``X-Fal-Request-Timeout``; when both
    are sent the newer one counts, but both must be valid. A value that is not a positive
    finite number of seconds raises ``ValueError``: the submit is refused with a 400 and no
    job is created, as a gateway checks its headers, rather than the deadline silently dropped.
    """
    timeout: float | None = None
    for name in reversed(START_TIMEOUT_HEADERS):
        if name not in headers:
            continue
        text = headers[name]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {text!r}")
        timeout = value
    return timeout


def is_low_priority(value: str | None) -> bool:
    # Priority can only be lowered, so anything but "low" is normal.
    return value is not None and value.strip().lower() == "low"


def logs_requested(value: str | None) -> bool:
    """``?logs=1`` or ``?logs=true`` (fal_client sends the Python bool as ``true``/``false``)."""
    return value is not None and value.strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True, slots=True)
class QueueUrls:
    """The absolute URLs of one request, built from the address the client used."""

    response_url: str
    status_url: str
    cancel_url: str

    @classmethod
    def build(cls, base_url: str, endpoint: str, request_id: str) -> QueueUrls:
        response_url = f"{base_url}/{endpoint}/requests/{request_id}"
        return cls(response_url, f"{response_url}/status", f"{response_url}/cancel")

    def as_dict(self) -> dict[str, str]:
        return {
            "response_url": self.response_url,
            "status_url": self.status_url,
            "cancel_url": self.cancel_url,
        }


def file_url(base_url: str, request_id: str) -> str:
    return f"{base_url}/_emulator/files/{request_id}/{OUTPUT_FILE_NAME}"


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: a JSON ``body``, or a text one when ``content_type`` is not JSON."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def detail(status: int, message: str) -> Reply:
    return Reply(status, {"detail": message})


# fal's billing header: units of the endpoint's billing unit (seconds of video for Lynx).
BILLABLE_UNITS_HEADER = "X-Fal-Billable-Units"


def format_units(units: float) -> str:
    """``units`` as a plain decimal that reads back as the same float: ``5.0625``, ``0.00001``
    (never ``1e-05``, which a strict decimal parser would refuse)."""
    # repr is the shortest text that reads back as the same float; Decimal spells it out.
    return format(Decimal(repr(units)), "f")


NOT_FOUND = Reply(404, {"detail": "Request not found"})
UNAUTHORIZED = Reply(
    401, {"detail": "Missing or invalid credentials: use 'Authorization: Key <key>'"}
)


def submit_reply(job: Job, position: int, urls: QueueUrls) -> Reply:
    return Reply(
        200,
        {
            "request_id": job.request_id,
            **urls.as_dict(),
            "status": "IN_QUEUE",
            "queue_position": position,
            "gateway_request_id": job.gateway_request_id,
        },
    )


# (error message, error_type) that a completed job's status carries, per outcome.
_STATUS_ERRORS: dict[Outcome, tuple[str, str]] = {
    Outcome.INVALID_INPUT: ("Invalid status code: 422", "validation_error"),
    Outcome.JOB_ERROR: ("Runner disconnected unexpectedly", "runner_disconnected"),
    Outcome.CANCELLED: ("Request was cancelled", "client_cancelled"),
    Outcome.START_TIMEOUT: ("Request timed out", "request_timeout"),
}


def status_reply(job: Job, now: float, position: int, urls: QueueUrls, with_logs: bool) -> Reply:
    """The status of ``job`` at ``now``: 202 while queued or running, 200 once completed."""
    body: dict[str, Any] = {"status": job.phase.value, "request_id": job.request_id}
    body.update(urls.as_dict())
    body["logs"] = log_lines(job, now) if with_logs else None
    if job.phase is Phase.IN_QUEUE:
        body["queue_position"] = position
        return Reply(202, body)
    if job.phase is Phase.IN_PROGRESS:
        return Reply(202, body)
    assert job.completed_at is not None
    assert job.outcome is not None
    inference_time = None if job.started_at is None else job.completed_at - job.started_at
    body["metrics"] = {"inference_time": inference_time}
    if job.outcome in _STATUS_ERRORS:
        body["error"], body["error_type"] = _STATUS_ERRORS[job.outcome]
    return Reply(200, body)


def result_reply(job: Job | None, base_url: str) -> Reply:
    """The answer to a result GET: the output, the app's own error, or fal's; with
    ``X-Fal-Billable-Units`` when the job was billed."""
    if job is None or job.phase is Phase.EXPIRED:
        return NOT_FOUND
    if job.phase is not Phase.COMPLETED:
        return detail(400, "Request is still in progress")
    reply = completed_result_reply(job, base_url)
    if job.billed_units <= 0:
        return reply
    billed = {**reply.headers, BILLABLE_UNITS_HEADER: format_units(job.billed_units)}
    return replace(reply, headers=billed)


def completed_result_reply(job: Job, base_url: str) -> Reply:
    """What the result of a job that has completed is (or was, once expired): the output, the
    app's own error, or fal's. Also the payload of the job's webhook."""
    assert job.outcome is not None, "the job has not completed"
    request_header = {"x-fal-request-id": job.request_id}
    match job.outcome:
        case Outcome.SUCCEEDED:
            assert job.plan.output is not None
            output = job.plan.output
            video = {"url": file_url(base_url, job.request_id), **output["video"]}
            return Reply(200, {**output, "video": video}, request_header)
        case Outcome.INVALID_INPUT:
            return Reply(422, {"detail": job.plan.validation_errors}, request_header)
        case Outcome.MODEL_ERROR:
            status = job.plan.model_status
            message = _MODEL_ERROR_DETAIL.get(status, "Internal Server Error")
            return Reply(status, {"detail": message}, request_header)
        case Outcome.JOB_ERROR:
            message, error_type = _STATUS_ERRORS[Outcome.JOB_ERROR]
            return Reply(
                503,
                {"detail": message, "error_type": error_type},
                {**request_header, "X-Fal-Error-Type": error_type, "X-Fal-Retryable": "true"},
            )
        case Outcome.START_TIMEOUT:
            # The user's own start deadline passed: fal's clients do not retry this 504.
            message, error_type = _STATUS_ERRORS[Outcome.START_TIMEOUT]
            return Reply(
                504,
                {"detail": message, "error_type": error_type},
                {
                    **request_header,
                    "X-Fal-Error-Type": error_type,
                    "X-Fal-Request-Timeout-Type": "user",
                },
            )
        case _:
            message, error_type = _STATUS_ERRORS[Outcome.CANCELLED]
            return Reply(
                400,
                {"detail": message, "error_type": error_type},
                {**request_header, "X-Fal-Error-Type": error_type},
            )


_MODEL_ERROR_DETAIL = {500: "Internal Server Error", 503: "Service Unavailable"}


# --- injected faults (see ``faults``) ---

_GATEWAY_REASONS = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def gateway_reply(status: int) -> Reply:
    """An error page from the gateway in front of the queue: nginx's HTML, and no
    ``x-fal-request-id`` (which is what tells a client it may retry)."""
    title = f"{status} {_GATEWAY_REASONS[status]}"
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Reply(status, page, {"Server": "nginx"}, content_type="text/html")


def rate_limited_reply(retry_after: float) -> Reply:
    """429 with ``Retry-After`` in seconds (fractional when configured so, for fast tests)."""
    return Reply(
        429,
        {"detail": "Too many requests: rate limit exceeded"},
        {"Retry-After": format(retry_after, ".3f").rstrip("0").rstrip(".")},
    )


_CANCEL_STATUS = {
    CancelOutcome.REQUESTED: 202,
    CancelOutcome.ALREADY_COMPLETED: 400,
    CancelOutcome.NOT_FOUND: 404,
}


def cancel_reply(outcome: CancelOutcome) -> Reply:
    return Reply(_CANCEL_STATUS[outcome], {"status": outcome.value})


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


def log_lines(job: Job, now: float) -> list[dict[str, str]]:
    """What the app would have printed by ``now``: a start line, progress, and how it ended."""
    if job.started_at is None:
        return []
    plan = job.plan
    start = job.started_at
    end = job.completed_at if job.completed_at is not None else now
    # Progress is spread over the planned run; a cancel cuts it short at ``end``.
    run_time = plan.run_time
    lines: list[tuple[float, str, str]] = []
    if plan.outcome is Outcome.INVALID_INPUT:
        lines.append((start, "INFO", "Validating input"))
    else:
        width, height = plan.frame_size
        lines.append(
            (start, "INFO", f"Generating {plan.num_frames} frames at {width}x{height} with Lynx")
        )
        for quarter in (1, 2, 3):
            step = plan.steps * quarter // 4
            lines.append(
                (start + run_time * quarter / 4, "STDERR", f"Denoising: {step}/{plan.steps}")
            )
    if job.completed_at is not None:
        match job.outcome:
            case Outcome.SUCCEEDED:
                lines.append((end, "INFO", f"Saved {OUTPUT_FILE_NAME}"))
            case Outcome.INVALID_INPUT:
                lines.append((end, "ERROR", "Input validation failed"))
            case Outcome.JOB_ERROR:
                lines.append((end, "ERROR", "Runner disconnected"))
            case Outcome.MODEL_ERROR:
                lines.append((end, "ERROR", "Unhandled exception in the app"))
            case _:
                lines.append((end, "WARN", "Cancelled by the client"))
    horizon = min(now, end)
    return [
        {"message": message, "level": level, "source": "USER", "timestamp": _timestamp(job.wall(t))}
        for t, level, message in lines
        if t <= horizon
    ]
