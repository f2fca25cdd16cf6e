"""Wire models: the request message, the Lynx input, and the result event.

This module is the single source of the message shapes in ``schemas/`` (``lynx-relay schemas``
writes them) and of the decoding of raw Kafka bytes into an accepted request or a precise
rejection. Decoding is pure: bytes in, a value out, no exception escapes for any input.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
)

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:@/-]{1,128}$"
# fullmatch, not match: Python's `$` also matches before a trailing newline ("abc\n").
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:@/-]{1,128}")
METADATA_MAX_BYTES = 16 * 1024
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
    num_frames: int | None = Field(
        default=None, ge=9, le=100, description="Number of frames to generate (fal's default: 81)."
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
        """The body fal receives: only the fields the request set."""
        return self.model_dump(mode="json", exclude_unset=True)


class RequestOptions(BaseModel):
    """How fal should treat the job; every field optional."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    priority: Literal["normal", "low"] | None = Field(
        default=None,
        description="fal queue priority (X-Fal-Queue-Priority); it can only lower it.",
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
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="Any JSON object of at most 16 KiB, echoed verbatim into the result event.",
    )
    options: RequestOptions | None = None

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


class ErrorInfo(BaseModel):
    """Why a request failed or was cancelled."""

    code: str = Field(
        description=(
            "invalid_request | fal_rejected | fal_failed | fal_unavailable | timeout | "
            "unauthorized | result_expired | internal_error | cancelled"
        )
    )
    message: str
    retryable: bool
    details: Any = None


class Timings(BaseModel):
    """When the relay saw each step; RFC 3339 UTC. A step that did not happen is null."""

    received_at: Timestamp
    submitted_at: Timestamp | None = None
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None


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

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


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


# --- decoding raw bytes --------------------------------------------------------------------

RejectReason = Literal[
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_request_id",
    "invalid_request_id",
    "schema",
    "policy",
]


@dataclass(frozen=True, slots=True)
class InputPolicy:
    """What the operator accepts beyond the model's own schema (settings; README "Security").

    ``allowed_hosts``: None allows any host; otherwise an image URL's host must be one of
    them or a subdomain of one.
    """

    max_message_bytes: int = 1_048_576
    max_prompt_chars: int = 5_000
    max_data_uri_bytes: int = 10 * 1024 * 1024
    allow_http: bool = False
    allowed_hosts: frozenset[str] | None = None

    def problems(self, request: VideoRequest) -> list[dict[str, Any]]:
        """Field errors (like the schema's) for what this policy refuses; empty if none."""
        out: list[dict[str, Any]] = []
        i = request.input
        for name, text in (("prompt", i.prompt), ("negative_prompt", i.negative_prompt)):
            if text is not None and len(text) > self.max_prompt_chars:
                out.append(
                    _problem(
                        f"input.{name}",
                        f"is {len(text)} characters; at most "
                        f"{self.max_prompt_chars} allowed (RELAY_MAX_PROMPT_CHARS)",
                        "too_long",
                    )
                )
        url = i.image_url
        if url.startswith("data:"):
            payload = url.split(",", 1)[1]
            try:
                decoded = base64.b64decode("".join(payload.split()), validate=True)
            except (binascii.Error, ValueError):
                out.append(
                    _problem("input.image_url", "data: URI is not valid base64", "bad_base64")
                )
            else:
                if len(decoded) > self.max_data_uri_bytes:
                    out.append(
                        _problem(
                            "input.image_url",
                            f"data: URI image is {len(decoded)} bytes; at most "
                            f"{self.max_data_uri_bytes} allowed (RELAY_MAX_DATA_URI_BYTES)",
                            "too_large",
                        )
                    )
            return out
        parts = urlsplit(url)
        if parts.scheme == "http" and not self.allow_http:
            out.append(
                _problem(
                    "input.image_url",
                    "http is not allowed, use https (RELAY_IMAGE_URL_ALLOW_HTTP)",
                    "scheme",
                )
            )
        host = (parts.hostname or "").lower()
        if self.allowed_hosts is not None and not any(
            host == allowed or host.endswith("." + allowed) for allowed in self.allowed_hosts
        ):
            out.append(
                _problem(
                    "input.image_url",
                    f"host {host!r} is not allowed (RELAY_IMAGE_URL_ALLOWED_HOSTS)",
                    "host",
                )
            )
        return out


def _problem(field: str, message: str, kind: str) -> dict[str, Any]:
    return {"field": field, "message": message, "type": kind}


DEFAULT_POLICY = InputPolicy()


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message cannot be accepted; ``request_id`` is set when one could be read."""

    reason: RejectReason
    message: str
    request_id: str | None = None
    details: list[dict[str, Any]] | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        # 1e999 parses to infinity, which JSON cannot carry back out (an echoed metadata
        # value would make the result event unreadable).
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key are read differently by different parsers: refuse, don't guess.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key[:50]!r}")
        obj[key] = value
    return obj


def decode_request(
    raw: bytes | None, policy: InputPolicy = DEFAULT_POLICY
) -> VideoRequest | CancelRequest | Rejection:
    """Turn a message value into a request, or a rejection that says precisely why not."""
    if raw is None:
        return Rejection("not_json", "message has no value")
    if len(raw) > policy.max_message_bytes:
        # Not even parsed: reading it is the cost the limit exists to avoid.
        return Rejection(
            "too_large",
            f"message is {len(raw)} bytes; at most {policy.max_message_bytes} allowed "
            "(RELAY_MAX_MESSAGE_BYTES)",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"value is not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        obj = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except (ValueError, RecursionError) as exc:
        return Rejection("not_json", f"value is not JSON: {exc}")
    if not isinstance(obj, dict):
        return Rejection("not_object", f"value is a JSON {type(obj).__name__}, not an object")
    request_id = obj.get("request_id")
    if request_id is None:
        return Rejection("missing_request_id", "request_id is missing")
    if not isinstance(request_id, str) or not _REQUEST_ID_RE.fullmatch(request_id):
        return Rejection(
            "invalid_request_id",
            "request_id must be a string of 1-128 characters from [A-Za-z0-9._:@/-]",
        )
    try:
        if "action" in obj:
            return CancelRequest.model_validate(obj)
        request = VideoRequest.model_validate(obj)
    except ValidationError as exc:
        details = field_errors(exc)
        return Rejection("schema", f"invalid request: {_summary(details)}", request_id, details)
    problems = policy.problems(request)
    if problems:
        return Rejection("policy", f"refused: {_summary(problems)}", request_id, problems)
    return request


def _summary(details: list[dict[str, Any]]) -> str:
    return "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as ``{"field": "input.num_frames", "message", "type"}`` entries."""
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "(message)",
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]
