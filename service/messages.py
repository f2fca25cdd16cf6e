"""Wire models: the request message, the Lynx input, and the result event.

This module is the single source of the message shapes in ``schemas/`` (``lynx-relay schemas``
writes them) and of the decoding of raw Kafka bytes into an accepted request or a precise
rejection. Decoding is pure: bytes in, a value out, no exception escapes for any input.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)

from service.core.cost import Cost
from service.core.jobs import Job
from service.core.outcomes import Failure, Outcome

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:@/-]{1,128}$"
METADATA_MAX_BYTES = 16 * 1024
TENANT_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
DEFAULT_TENANT = "default"
_DATA_URI_RE = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,[A-Za-z0-9+/=\s]+$")


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a ``Z``, the one timestamp format on our wire."""
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


Timestamp = Annotated[
    datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")
]


class LynxInput(BaseModel):
    """The input of fal's Lynx model, every field and constraint of its model page.

    Fields a request leaves out are not sent to fal, so fal applies its own defaults.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    image_url: str = Field(
        description="The subject image: an https URL or a data:image/...;base64, URI.",
        min_length=1,
    )
    prompt: str = Field(description="Text prompt to guide video generation.", min_length=1)
    negative_prompt: str | None = Field(
        default=None, description="What should not appear in the video."
    )
    num_inference_steps: int | None = Field(
        default=None, ge=1, le=75, description="Denoising steps (fal's default: 50)."
    )
    seed: int | None = Field(default=None, description="Random seed (fal picks one when absent).")
    resolution: Literal["480p", "580p", "720p"] | None = Field(
        default=None, description="Output resolution (fal's default: 720p)."
    )
    aspect_ratio: Literal["16:9", "9:16", "1:1"] | None = Field(
        default=None, description="Output aspect ratio (fal's default: 16:9)."
    )
    ip_scale: float | None = Field(
        default=None, ge=0, le=2, description="Identity preservation strength (fal's default: 1)."
    )
    strength: float | None = Field(
        default=None, ge=0, le=2, description="Reference image scale (fal's default: 1)."
    )
    frames_per_second: int | None = Field(
        default=None, ge=5, le=30, description="Frames per second of the video (fal's default: 16)."
    )
    guidance_scale: float | None = Field(
        default=None, ge=1, le=20, description="Classifier-free guidance scale (fal's default: 5)."
    )
    guidance_scale_2: float | None = Field(
        default=None, ge=0, le=10, description="Second guidance scale (fal's default: 2)."
    )
    # fal's published schema for Lynx says 9-81 (its prose says 100; the app enforces 81).
    num_frames: int | None = Field(
        default=None, ge=9, le=81, description="Number of frames to generate (fal's default: 81)."
    )

    @field_validator("image_url")
    @classmethod
    def _image_url_scheme(cls, value: str) -> str:
        # The shape only; which schemes and hosts are allowed is the InputPolicy's call.
        if value.startswith(("https://", "http://")) and urlsplit(value).hostname:
            return value
        if _DATA_URI_RE.match(value):
            return value
        raise ValueError("must be an https URL or a data:image/...;base64, URI")

    def to_fal_arguments(self) -> dict[str, Any]:
        """The body fal receives: only the fields the request set to a value. A null is left
        out: fal's schema takes null for ``seed`` only (where it means what leaving it out
        means), so a null sent as such would be refused (422) for any other field."""
        return self.model_dump(mode="json", exclude_unset=True, exclude_none=True)

    @property
    def shape(self) -> str:
        """What a job's run time depends on: jobs of one shape take about as long."""
        return f"{self.resolution}|{self.aspect_ratio}|{self.num_frames}|{self.num_inference_steps}"


class RequestOptions(BaseModel):
    """How fal should treat the job; every field optional."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    priority: Literal["high", "normal", "low"] | None = Field(
        default=None,
        description="The relay's priority class (absent: normal): high goes before normal, "
        "normal before low, inside a tenant's share; a waiting request moves up one class per "
        "RELAY_PRIORITY_AGING_S. fal is told low as X-Fal-Queue-Priority: low (fal has no high).",
    )
    start_timeout_s: float | None = Field(
        default=None,
        gt=1,
        le=86_400,
        description="If fal has not started the job within this many seconds, it gives up "
        "(X-Fal-Request-Timeout); the request fails with code timeout.",
    )
    deadline: Annotated[AwareDatetime, Field(strict=False)] | None = Field(
        default=None,
        description="RFC 3339 time with a zone. A request past its deadline is not submitted; "
        "a job still running at its deadline is cancelled at fal. Either way: failed, timeout.",
    )
    runner_hint: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Routing hint for fal's runners (X-Fal-Runner-Hint).",
    )


class VideoRequest(BaseModel):
    """A video-generation request as published on the requests topic."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    request_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="Idempotency key of the request: 1-128 characters of [A-Za-z0-9._:@/-].",
    )
    input: LynxInput
    tenant: str | None = Field(
        default=None,
        pattern=TENANT_PATTERN,
        description="Who asks (an upstream service): the scheduler shares the fal account "
        "between tenants by weight (RELAY_TENANTS_FILE). Absent: default.",
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="Any JSON object of at most 16 KiB, echoed verbatim into the result event.",
    )
    options: RequestOptions | None = None

    @property
    def tenant_name(self) -> str:
        return self.tenant or DEFAULT_TENANT

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            if size > METADATA_MAX_BYTES:
                raise ValueError(f"is {size} bytes of JSON; at most {METADATA_MAX_BYTES} allowed")
        return value


class CancelRequest(BaseModel):
    """Cancels a request: ``{"request_id": "...", "action": "cancel"}`` on the requests topic,
    keyed by the request_id like the request itself (so it reaches the same replica)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
    action: Literal["cancel"]


class Video(BaseModel):
    """The video fal produced. Fields fal did not return are null."""

    url: str
    content_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    width: int | None = None
    height: int | None = None
    fps: int | float | None = None
    duration: int | float | None = None
    num_frames: int | None = None
    # With output storage (RELAY_OUTPUT_URL): ``url`` is the stored copy (or a presigned URL of
    # it), ``fal_url`` fal's own file, ``sha256`` the hex digest of the bytes copied.
    fal_url: str | None = None
    sha256: str | None = None


# The contract's error codes, in one place: the error tree (``service.errors``) names its
# codes from here, the metrics derive their label values from it, and a test keeps them equal.
ErrorCode = Literal[
    "invalid_request",
    "fal_rejected",
    "fal_failed",
    "fal_unavailable",
    "timeout",
    "unauthorized",
    "result_expired",
    "internal_error",
    "cancelled",
    "budget_exceeded",
    "storage_failed",
]
ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)


class ErrorInfo(BaseModel):
    """Why a request failed or was cancelled."""

    code: str = Field(description=" | ".join(ERROR_CODES))
    message: str
    retryable: bool
    details: Any = None


class Timings(BaseModel):
    """When the relay saw each step; RFC 3339 UTC. A step that did not happen is null."""

    received_at: Timestamp
    submitted_at: Timestamp | None = None
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None


class CostInfo(BaseModel):
    """What the request cost: fal's billed units times the account's unit price."""

    units: float
    unit: str
    unit_price: float
    amount: float
    currency: str
    estimated: bool  # no billed units in fal's answer: from num_frames / frames_per_second


class ResultEvent(BaseModel):
    """The one terminal event published per accepted request, keyed by its request_id."""

    request_id: str
    status: Literal["succeeded", "failed", "cancelled"]
    video: Video | None = None
    seed: int | None = None
    error: ErrorInfo | None = None
    fal_request_id: str | None = None
    metadata: dict[str, Any] | None = None
    timings: Timings
    cost: CostInfo | None = None  # null when nothing was billed

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def result_event(
    job: Job, outcome: Outcome, metadata: dict[str, Any] | None, cost: Cost | None = None
) -> ResultEvent:
    """The contract's result event for a job that ended with ``outcome``."""
    video = Video.model_validate(dict(outcome.video)) if outcome.video is not None else None
    return ResultEvent(
        request_id=job.request_id,
        status=outcome.status,
        video=video,
        seed=outcome.seed,
        error=_error_info(outcome.error),
        fal_request_id=job.fal_request_id,
        metadata=metadata,
        timings=Timings(
            received_at=job.received_at,
            submitted_at=job.submitted_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
        ),
        cost=None
        if cost is None
        else CostInfo(
            units=cost.units,
            unit=cost.unit,
            unit_price=cost.unit_price,
            amount=cost.amount,
            currency=cost.currency,
            estimated=cost.estimated,
        ),
    )


def instant_event(request_id: str, outcome: Outcome, now: datetime) -> ResultEvent:
    """The result event of a request that ended the moment it was read (an invalid message,
    a cancel that came first): no job, no fal."""
    return ResultEvent(
        request_id=request_id,
        status=outcome.status,
        error=_error_info(outcome.error),
        timings=Timings(received_at=now, completed_at=now),
    )


def _error_info(failure: Failure | None) -> ErrorInfo | None:
    if failure is None:
        return None
    return ErrorInfo(
        code=failure.code,
        message=failure.message,
        retryable=failure.retryable,
        details=failure.details,
    )


class ProgressLog(BaseModel):
    message: str
    level: str | None = None
    timestamp: str | None = None


class ProgressEvent(BaseModel):
    """Optional progress of a job (RELAY_PROGRESS_TOPIC), keyed by request_id: ``queued``
    (with its queue position), ``started``, ``log`` (one of fal's log lines). Bounded per job;
    best effort (a lost progress event is never retried at the cost of results)."""

    request_id: str
    fal_request_id: str | None = None
    event: Literal["queued", "started", "log"]
    queue_position: int | None = None
    log: ProgressLog | None = None
    at: Timestamp

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()
