"""Raw Kafka bytes in, an accepted request or a precise rejection out; pure, and no exception
escapes for any input. The rejection reasons (``RejectReason``) are the dead-letter codes
and the label values of ``lynx_relay_requests_rejected_total``. What the operator accepts
beyond the model's schema is the ``InputPolicy`` (README "Security").
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from service.messages import REQUEST_ID_PATTERN, CancelRequest, VideoRequest

# fullmatch, not match: Python's `$` also matches before a trailing newline ("abc\n").
_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN.removeprefix("^").removesuffix("$"))

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
