"""fal's Platform API (``https://api.fal.ai/v1``) as far as the emulator serves it: an endpoint's
request history and the deletion of a request's payloads, both over the emulator's own jobs, and
the endpoints' unit prices.

This module owns the Platform API's words: its paths under ``/v1``, the query of
``GET /v1/models/requests/by-endpoint`` and how it is checked, which jobs a page lists and in
which order, each item's fields, the paging cursor, the query and answer of
``GET /v1/models/pricing``, and the ``{"error": {...}}`` answers. Like ``wire`` it is pure: it
reads ``Job`` records (or the price) at a moment and returns values; ``server`` authenticates,
advances the simulation first, and moves bytes.

Where fal's documentation is silent, the emulator's choices (a client must not rely on them):

- The window (``start`` inclusive, ``end`` exclusive; ISO 8601, a date alone is midnight UTC, no
  zone is UTC) applies to ``sent_at``, the submit. ``start`` defaults to 24 hours before the
  call, 90 days when ``request_id`` is given; ``end`` to no bound (nothing is sent in the future).
- Which jobs: with ``history_lists="all"`` every job from its submit on (``started_at`` null
  while queued, ``ended_at``, ``status_code`` and ``duration`` null until it ends); with
  ``"ended"`` only jobs that have ended. A ``status`` filter never matches a job not ended.
- Order: ``sort_by=ended_at`` (the default) lists ended jobs latest end first, then the jobs not
  ended, latest submit first; ``sort_by=duration`` longest first, the jobs not ended last.
- The cursor encodes the page number, as fal's does (``"Mg=="`` is page 2), and each page is cut
  from the order as it is when that page is asked for. Between two pages the only moves are
  forward: a job that ends leaves the tail of jobs not ended for a place further ahead, a new
  job is inserted, and every other job keeps its place or is pushed back. So with a fixed
  ``start``, a pass through the pages sees every job listed when it began except one that ended
  meanwhile (it moved ahead, onto a page already read: a new pass finds it), and a later page
  may repeat a job that was pushed back. A client dedupes by ``request_id``.
- ``status_code`` is what the request ended with: 200; 422 for input the model refused; the
  model's own 500 or 503; 503 ``runner_disconnected``; 504 for a start timeout; 499
  ``client_cancelled`` (fal's code for it; the queue's result answers a cancelled job with 400).
  ``status``: 2xx is ``success``, 4xx ``user_error``, 5xx ``error``.
- ``duration`` is seconds from ``sent_at`` to ``ended_at`` (fal's example lists 7.8 s for a
  request sent 7 s before it ended).
- ``json_output`` (with ``expand=payloads``) is the body of the request's result, output or
  error; null until it ends. After ``DELETE .../payloads`` both payloads are null and the output
  file is gone (404); the queue's own result is left as it was.
- Pricing: ``endpoint_id`` is required, repeated or comma-separated, 1 to 50 of them, as fal's
  documentation says; each gets one price (a repeated id one only, in the order first asked),
  all the emulator's one unit price (``unit`` ``"second"``, ``currency`` ``"USD"``), on one page.
  An id is checked as the history checks it: 422 when malformed, 404 when not served.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, get_args

from fal_emulator.config import BILLING_UNIT, CURRENCY, HistoryLists
from fal_emulator.jobs import Job, Outcome
from fal_emulator.wire import NAMESPACES, completed_result_reply, file_url

API_PREFIX = "/v1"
DOCS_URL = "https://docs.fal.ai/platform-apis"
HISTORY_DOCS_URL = f"{DOCS_URL}/v1/models/requests/by-endpoint"
PAYLOADS_DOCS_URL = f"{DOCS_URL}/v1/models/requests/payloads"
PRICING_DOCS_URL = f"{DOCS_URL}/v1/models/pricing"

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
DEFAULT_WINDOW = timedelta(hours=24)
REQUEST_ID_WINDOW = timedelta(days=90)
MAX_PRICED_ENDPOINTS = 50

ErrorType = Literal[
    "authorization_error", "validation_error", "not_found", "rate_limited", "server_error"
]
StatusClass = Literal["success", "error", "user_error"]
SortBy = Literal["ended_at", "duration"]
STATUS_CLASSES: tuple[StatusClass, ...] = get_args(StatusClass)
SORT_BY: tuple[SortBy, ...] = get_args(SortBy)
EXPANSIONS = ("payloads",)


class PlatformError(Exception):
    """A Platform API error: its HTTP status, ``type`` and message."""

    def __init__(self, status: int, error_type: ErrorType, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def body(self, request_id: str, docs_url: str = DOCS_URL) -> dict[str, Any]:
        """``{"error": {"type", "message", "docs_url", "request_id"}}``; ``request_id`` names the
        API call that failed (not a queue request)."""
        return {
            "error": {
                "type": self.error_type,
                "message": self.message,
                "docs_url": docs_url,
                "request_id": request_id,
            }
        }


def unauthorized() -> PlatformError:
    return PlatformError(
        401, "authorization_error", "Missing or invalid API key: use 'Authorization: Key <key>'"
    )


def not_found(message: str) -> PlatformError:
    return PlatformError(404, "not_found", message)


def _invalid(message: str) -> PlatformError:
    return PlatformError(422, "validation_error", message)


# --- routes ----------------------------------------------------------------------------------

PlatformRouteKind = Literal["history", "delete_payloads", "pricing"]


@dataclass(frozen=True, slots=True)
class PlatformRoute:
    kind: PlatformRouteKind
    request_id: str | None = None


def parse_platform_path(method: str, path: str) -> PlatformRoute | None:
    """Which Platform API route ``method path`` is (trailing slashes ignored), or None."""
    segments = [segment for segment in path.split("/") if segment]
    if segments[:1] != [API_PREFIX.strip("/")]:
        return None
    rest = segments[1:]
    if method in ("GET", "HEAD") and rest == ["models", "requests", "by-endpoint"]:
        return PlatformRoute("history")
    if method in ("GET", "HEAD") and rest == ["models", "pricing"]:
        return PlatformRoute("pricing")
    if (
        method == "DELETE"
        and len(rest) == 4
        and rest[:2] == ["models", "requests"]
        and rest[3] == "payloads"
    ):
        return PlatformRoute("delete_payloads", request_id=rest[2])
    return None


def check_request_id(text: str) -> str:
    """A request id as the API takes it (a UUID), in the queue's spelling. Raises 422."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise _invalid(f"request_id must be a UUID, got {text!r}") from None


# --- the history query -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A checked ``by-endpoint`` query. ``end`` None: no upper bound."""

    endpoint_id: str
    start: datetime
    end: datetime | None = None
    status: StatusClass | None = None
    request_id: str | None = None
    limit: int = DEFAULT_LIMIT
    page: int = 1
    payloads: bool = False
    sort_by: SortBy = "ended_at"


def parse_history_query(
    pairs: Iterable[tuple[str, str]], *, now: datetime, endpoints: Sequence[str]
) -> HistoryQuery:
    """The query of ``GET /v1/models/requests/by-endpoint`` from its ``(name, value)`` pairs.

    Raises ``PlatformError``: 422 for a missing, repeated or malformed parameter, 404 for an
    endpoint the emulator does not serve. Unknown parameters are ignored.
    """
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)

    def single(name: str) -> str | None:
        values = params.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise _invalid(f"{name} may be given once")
        return values[0]

    endpoint_id = _endpoint_id(single("endpoint_id"), endpoints)
    request_id = single("request_id")
    if request_id is not None:
        request_id = check_request_id(request_id)
    start_text, end_text = single("start"), single("end")
    default_window = DEFAULT_WINDOW if request_id is None else REQUEST_ID_WINDOW
    start = now - default_window if start_text is None else _timestamp("start", start_text)
    end = None if end_text is None else _timestamp("end", end_text)
    if end is not None and end < start:
        raise _invalid("end must not be before start")
    return HistoryQuery(
        endpoint_id=endpoint_id,
        start=start,
        end=end,
        status=_choice("status", single("status"), STATUS_CLASSES, None),
        request_id=request_id,
        limit=_limit(single("limit")),
        page=_page(single("cursor")),
        payloads=_expand(params.get("expand", [])),
        sort_by=_choice("sort_by", single("sort_by"), SORT_BY, "ended_at") or "ended_at",
    )


def _endpoint_id(text: str | None, endpoints: Sequence[str]) -> str:
    if text is None or not text.strip():
        raise _invalid("endpoint_id is required")
    segments = [segment for segment in text.strip().split("/") if segment]
    width = 3 if segments and segments[0] in NAMESPACES else 2
    if len(segments) < width:
        raise _invalid(f"endpoint_id {text!r} is not of the form owner/alias[/path]")
    if "/".join(segments[:width]) not in endpoints:
        raise not_found(f"Endpoint {text.strip()!r} not found")
    return "/".join(segments)


def _timestamp(name: str, text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _invalid(f"{name} must be an ISO 8601 date or date-time, got {text!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


_Choice = TypeVar("_Choice", bound=str)


def _choice(
    name: str, text: str | None, choices: tuple[_Choice, ...], default: _Choice | None
) -> _Choice | None:
    if text is None:
        return default
    for choice in choices:
        if text == choice:
            return choice
    raise _invalid(f"{name} must be one of {', '.join(choices)}, got {text!r}")


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit() and 1 <= int(stripped) <= MAX_LIMIT):
        raise _invalid(f"limit must be an integer from 1 to {MAX_LIMIT}, got {text!r}")
    return int(stripped)


def encode_cursor(page: int) -> str:
    """The cursor of ``page``, fal's spelling: base64 of the page number (``"Mg=="`` is 2)."""
    return base64.b64encode(str(page).encode()).decode()


def _page(cursor: str | None) -> int:
    if cursor is None:
        return 1
    try:
        text = base64.b64decode(cursor.strip(), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    # A page number of a few digits: anything else was not made by this API.
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and int(text) >= 1):
        raise _invalid(f"cursor {cursor!r} is not a cursor this API gave")
    return int(text)


def _expand(values: list[str]) -> bool:
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(EXPANSIONS))
    if unknown:
        raise _invalid(f"expand takes {', '.join(EXPANSIONS)}, got {', '.join(unknown)}")
    return "payloads" in names


# --- what a job looks like in the history ----------------------------------------------------

# The status code a request ended with, per outcome (MODEL_ERROR: the model's own, 500 or 503).
_STATUS_CODES: dict[Outcome, int] = {
    Outcome.SUCCEEDED: 200,
    Outcome.INVALID_INPUT: 422,
    Outcome.JOB_ERROR: 503,
    Outcome.START_TIMEOUT: 504,
    Outcome.CANCELLED: 499,
}


def status_code(job: Job) -> int | None:
    """What the request ended with, or None while it has not ended."""
    if job.outcome is None:
        return None
    if job.outcome is Outcome.MODEL_ERROR:
        return job.plan.model_status
    return _STATUS_CODES[job.outcome]


def status_class(code: int | None) -> StatusClass | None:
    if code is None:
        return None
    if code < 400:
        return "success"
    return "user_error" if code < 500 else "error"


def endpoint_id(job: Job) -> str:
    """The full endpoint id the job was submitted to, subpath included."""
    return job.endpoint if job.subpath is None else f"{job.endpoint}/{job.subpath}"


def sent_at(job: Job) -> datetime:
    return datetime.fromtimestamp(job.submitted_wall, UTC)


def _at(job: Job, t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(job.wall(t), UTC)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def history_item(job: Job, *, payloads: bool, base_url: str) -> dict[str, Any]:
    """One item of the history; ``json_input`` and ``json_output`` only with ``payloads``."""
    sent, ended = sent_at(job), _at(job, job.completed_at)
    item: dict[str, Any] = {
        "request_id": job.request_id,
        "endpoint_id": endpoint_id(job),
        "sent_at": _iso(sent),
        "started_at": _iso(_at(job, job.started_at)),
        "ended_at": _iso(ended),
        "status_code": status_code(job),
        "duration": None if ended is None else (ended - sent).total_seconds(),
    }
    if payloads:
        stored = not job.payloads_deleted
        item["json_input"] = job.input if stored else None
        ended_output = job.outcome is not None and stored
        item["json_output"] = completed_result_reply(job, base_url).body if ended_output else None
    return item


def _listed(job: Job, query: HistoryQuery, lists: HistoryLists) -> bool:
    if lists == "ended" and job.completed_at is None:
        return False
    if endpoint_id(job) != query.endpoint_id:
        return False
    if query.request_id is not None and job.request_id != query.request_id:
        return False
    sent = sent_at(job)
    if sent < query.start or (query.end is not None and sent >= query.end):
        return False
    return query.status is None or status_class(status_code(job)) == query.status


def _order(job: Job, sort_by: SortBy) -> tuple[int, float, int]:
    """Sort key, ascending: ended jobs first (latest end or longest run first), then the rest,
    latest submit first. Monotonic times, so the order is the order events happened in."""
    if job.completed_at is None:
        return (1, 0.0, -job.seq)
    if sort_by == "duration":
        return (0, -(job.completed_at - job.submitted_at), -job.seq)
    return (0, -job.completed_at, -job.seq)


def history_page(
    jobs: Iterable[Job], query: HistoryQuery, *, lists: HistoryLists, base_url: str
) -> dict[str, Any]:
    """``{"items", "next_cursor", "has_more"}``: the query's page of the jobs as they are now."""
    listed = sorted(
        (job for job in jobs if _listed(job, query, lists)),
        key=lambda job: _order(job, query.sort_by),
    )
    first = (query.page - 1) * query.limit
    page = listed[first : first + query.limit]
    has_more = len(listed) > first + query.limit
    return {
        "items": [history_item(job, payloads=query.payloads, base_url=base_url) for job in page],
        "next_cursor": encode_cursor(query.page + 1) if has_more else None,
        "has_more": has_more,
    }


def delete_payloads(job: Job, base_url: str) -> dict[str, Any]:
    """The answer to ``DELETE /v1/models/requests/{id}/payloads``: one entry per output file
    deleted now (none the second time). The caller marks the job's payloads deleted."""
    results: list[dict[str, Any]] = []
    if job.outcome is Outcome.SUCCEEDED and not job.payloads_deleted:
        results.append({"link": file_url(base_url, job.request_id), "exception": None})
    return {"cdn_delete_results": results}


# --- pricing ---------------------------------------------------------------------------------


def parse_pricing_query(pairs: Iterable[tuple[str, str]], *, endpoints: Sequence[str]) -> list[str]:
    """The endpoint ids of ``GET /v1/models/pricing``, repeated (``?endpoint_id=a&endpoint_id=b``)
    or comma-separated (``?endpoint_id=a,b``), each once, in the order first asked.

    Raises ``PlatformError``: 422 when none is given, more than 50 are, or one is malformed; 404
    for an endpoint the emulator does not serve. Other parameters are ignored.
    """
    asked = [
        part.strip()
        for name, value in pairs
        if name == "endpoint_id"
        for part in value.split(",")
        if part.strip()
    ]
    if not asked:
        raise _invalid("endpoint_id is required")
    if len(asked) > MAX_PRICED_ENDPOINTS:
        raise _invalid(f"endpoint_id takes 1 to {MAX_PRICED_ENDPOINTS} ids, got {len(asked)}")
    ids = [_endpoint_id(text, endpoints) for text in asked]
    return list(dict.fromkeys(ids))


def pricing_page(endpoint_ids: Sequence[str], unit_price: float) -> dict[str, Any]:
    """``{"prices", "next_cursor", "has_more"}``: ``unit_price`` for each endpoint, one page."""
    return {
        "prices": [
            {
                "endpoint_id": endpoint,
                "unit_price": unit_price,
                "unit": BILLING_UNIT,
                "currency": CURRENCY,
            }
            for endpoint in endpoint_ids
        ],
        "next_cursor": None,
        "has_more": False,
    }
