"""fal's Platform API as the emulator serves it: the request history of an endpoint, built from
the emulator's own jobs, and the deletion of a request's payloads.

The history's rules (fields, window, status, order, pages, the two history modes) are checked on
the pure simulation with a hand-held clock, so every time is exact; the wire (``api_url``, auth,
the error shape, runtime reconfiguration, and a lost submit answer found again) on a real
``FalEmulator``. Jobs there finish in 0.01-0.03 s and are awaited through their status stream, or
held running with ``[emulator:run=30]``; nothing waits on a sleep.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from fal_emulator import EmulatorConfig, Faults, config_from_arguments
from fal_emulator.config import HistoryLists
from fal_emulator.jobs import Job, Simulation
from fal_emulator.platform_api import (
    PlatformError,
    encode_cursor,
    history_page,
    parse_history_query,
    parse_platform_path,
)
from tests.unit.emulator_support import (
    AUTH,
    BODY,
    HOLD,
    Harness,
    StartEmulator,
    body,
    emulator_fixtures,
    emulator_parser,
    simulation,
    submit_job,
)

start_emulator, fal = emulator_fixtures(seed=3)

BASE = "http://fal.test"
ENDPOINTS = ("fal-ai/lynx", "bytedance/lynx")
WALL0 = 1_700_000_000.0  # the wall clock at monotonic 0 in ``submit_job``
HISTORY = "/v1/models/requests/by-endpoint"
NO_ROUTE = "/v1/models/no-such-route"  # no Platform API route the emulator serves


# --- the pure history, with a hand-held clock --------------------------------------------------


def at(now: float) -> datetime:
    return datetime.fromtimestamp(WALL0 + now, UTC)


def iso(now: float) -> str:
    return at(now).isoformat(timespec="microseconds").replace("+00:00", "Z")


def submit(
    sim: Simulation, now: float, payload: dict[str, Any] | None = None, **options: Any
) -> Job:
    """``submit_job`` with a UUID request id, as the Platform API takes only those."""
    request_id = str(uuid.UUID(int=sim.counters.submissions + 1))
    return submit_job(sim, now, payload, request_id=request_id, **options)


def page(
    sim: Simulation, now: float, lists: HistoryLists = "all", **params: str | None
) -> dict[str, Any]:
    """The history at ``now`` for ``fal-ai/lynx``, with ``params`` (strings, as on the wire;
    None leaves one out)."""
    sim.advance(now)
    pairs = [("endpoint_id", "fal-ai/lynx")]
    pairs += [(name, value) for name, value in params.items() if value is not None]
    query = parse_history_query(pairs, now=at(now), endpoints=ENDPOINTS)
    return history_page(sim.jobs(), query, lists=lists, base_url=BASE)


def ids(listed: dict[str, Any]) -> list[str]:
    return [item["request_id"] for item in listed["items"]]


def test_an_item_carries_the_jobs_times_status_and_duration() -> None:
    """sent_at is the submit, started_at and ended_at the run, duration sent to ended; the
    payloads only with expand=payloads."""
    sim = simulation(queue_wait=(0.5, 0.5))
    job = submit(sim, 10.0)
    (item,) = page(sim, 12.0)["items"]
    assert item == {
        "request_id": job.request_id,
        "endpoint_id": "fal-ai/lynx",
        "sent_at": iso(10.0),
        "started_at": iso(10.5),
        "ended_at": iso(11.5),
        "status_code": 200,
        "duration": 1.5,
    }
    assert iso(10.0) == "2023-11-14T22:13:30.000000Z"


def by_id(listed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["request_id"]: item for item in listed["items"]}


def test_payloads_are_the_input_and_the_results_body() -> None:
    """With expand=payloads: the input as submitted and the result's body, null until the job
    ended and after its payloads were deleted."""
    sim = simulation()
    done, running = submit(sim, 0.0), submit(sim, 0.5, body(HOLD))
    items = by_id(page(sim, 2.0, expand="payloads"))
    assert items[done.request_id]["json_input"] == BODY
    output = items[done.request_id]["json_output"]
    assert output["video"]["url"] == f"{BASE}/_emulator/files/{done.request_id}/output.mp4"
    assert done.plan.output is not None
    assert output["seed"] == done.plan.output["seed"]
    assert items[running.request_id]["json_input"] == body(HOLD)
    assert items[running.request_id]["json_output"] is None

    done.payloads_deleted = True
    item = by_id(page(sim, 2.0, expand="payloads"))[done.request_id]
    assert (item["json_input"], item["json_output"]) == (None, None)
    assert "json_input" not in by_id(page(sim, 2.0))[done.request_id]


def test_each_outcome_has_its_status_code_and_class() -> None:
    """2xx success, 4xx user_error, 5xx error; a job not ended has no status and matches none."""
    sim = simulation(max_concurrent=1)
    cases = {
        "cancelled_running": submit(sim, 0.0, body(HOLD)),  # holds the one slot
        "start_timeout": submit(sim, 0.0, start_timeout=1.0),  # so this never starts
        "cancelled_queued": submit(sim, 0.0),
    }
    sim.cancel(cases["cancelled_queued"].request_id, 2.0)
    sim.cancel(cases["cancelled_running"].request_id, 2.0)
    cases |= {  # one after the other, 1 s each (invalid input ends at once)
        "succeeded": submit(sim, 3.0),
        "invalid_input": submit(sim, 3.0, body(num_frames=999)),
        "job_error": submit(sim, 3.0, body("[emulator:job-error]")),
        "model_500": submit(sim, 3.0, body("[emulator:result-500]")),
        "model_503": submit(sim, 3.0, body("[emulator:result-503]")),
        "running": submit(sim, 3.0, body(HOLD)),
    }
    name_of = {job.request_id: name for name, job in cases.items()}
    items = page(sim, 8.0)["items"]
    assert {name_of[item["request_id"]]: item["status_code"] for item in items} == {
        "cancelled_running": 499,
        "cancelled_queued": 499,
        "start_timeout": 504,
        "succeeded": 200,
        "invalid_input": 422,
        "job_error": 503,
        "model_500": 500,
        "model_503": 503,
        "running": None,
    }
    listed = {
        status: {name_of[i] for i in ids(page(sim, 8.0, status=status))}
        for status in ("success", "user_error", "error")
    }
    assert listed == {
        "success": {"succeeded"},
        "user_error": {"invalid_input", "cancelled_running", "cancelled_queued"},
        "error": {"job_error", "model_500", "model_503", "start_timeout"},
    }


def test_the_window_is_on_sent_at_start_inclusive_end_exclusive() -> None:
    sim = simulation()
    first, second, third = (submit(sim, now) for now in (0.0, 10.0, 20.0))
    assert ids(page(sim, 30.0, start=iso(10.0))) == [third.request_id, second.request_id]
    assert ids(page(sim, 30.0, start=iso(0.0), end=iso(20.0))) == [
        second.request_id,
        first.request_id,
    ]
    # A date alone is midnight UTC; a time without a zone is UTC too.
    assert len(page(sim, 30.0, start="2023-11-14")["items"]) == 3
    assert page(sim, 30.0, start="2023-11-15")["items"] == []
    naive = at(10.0).replace(tzinfo=None).isoformat()
    assert ids(page(sim, 30.0, start=naive, end=iso(20.0))) == [second.request_id]
    # An offset other than UTC means the same instant.
    plus_two = at(10.0).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert ids(page(sim, 30.0, start=plus_two, end=iso(20.0))) == [second.request_id]


def test_start_defaults_to_a_day_ago_or_ninety_days_for_a_request_id() -> None:
    sim = simulation()
    old = submit(sim, 0.0)
    day = 24 * 3600.0
    assert ids(page(sim, day - 1)) == [old.request_id]
    assert page(sim, day + 1)["items"] == []
    assert ids(page(sim, day + 1, request_id=old.request_id)) == [old.request_id]
    assert page(sim, 91 * day, request_id=old.request_id)["items"] == []
    assert ids(page(sim, 91 * day, request_id=old.request_id, start=iso(0.0))) == [old.request_id]


def test_the_request_id_filter_matches_one_job_in_any_spelling() -> None:
    sim = simulation()
    jobs = [submit(sim, now) for now in (0.0, 1.0, 2.0)]
    wanted = jobs[1].request_id
    assert ids(page(sim, 5.0, request_id=wanted)) == [wanted]
    assert ids(page(sim, 5.0, request_id=wanted.upper())) == [wanted]
    assert page(sim, 5.0, request_id=str(uuid.uuid4()))["items"] == []


def test_history_modes_list_a_job_from_its_submit_or_once_it_ended() -> None:
    """all: queued and running jobs too, their missing times null; ended: only ended jobs."""
    sim = simulation(max_concurrent=1)
    running, queued = submit(sim, 0.0, body(HOLD)), submit(sim, 1.0)
    items = page(sim, 2.0, "all")["items"]
    assert [(i["request_id"], i["started_at"], i["ended_at"]) for i in items] == [
        (queued.request_id, None, None),
        (running.request_id, iso(0.0), None),
    ]
    assert [(i["status_code"], i["duration"]) for i in items] == [(None, None), (None, None)]
    assert page(sim, 2.0, "ended")["items"] == []

    sim.cancel(running.request_id, 3.0)  # the queued job starts and runs 1 s
    assert ids(page(sim, 3.5, "ended")) == [running.request_id]
    assert ids(page(sim, 3.5, "all")) == [running.request_id, queued.request_id]
    assert ids(page(sim, 4.5, "ended")) == [queued.request_id, running.request_id]


def test_pages_follow_the_cursor_latest_end_first() -> None:
    sim = simulation()
    jobs = [submit(sim, float(now)) for now in range(5)]
    newest_first = [job.request_id for job in reversed(jobs)]
    seen: list[str] = []
    cursors: list[str | None] = []
    cursor: str | None = None
    while True:
        listed = page(sim, 10.0, limit="2", cursor=cursor)
        seen += ids(listed)
        cursors.append(listed["next_cursor"])
        assert listed["has_more"] is (listed["next_cursor"] is not None)
        if not listed["has_more"]:
            break
        cursor = listed["next_cursor"]
    assert seen == newest_first
    assert cursors == ["Mg==", "Mw==", None]  # fal's spelling: base64 of the page number
    assert ids(page(sim, 10.0, limit="100")) == newest_first
    assert len(page(sim, 10.0)["items"]) == 5  # limit defaults to 50
    beyond = page(sim, 10.0, limit="2", cursor=encode_cursor(4))
    assert (beyond["items"], beyond["next_cursor"], beyond["has_more"]) == ([], None, False)


def test_paging_while_jobs_end_and_arrive_repeats_but_skips_only_what_ended() -> None:
    """Each page is cut from the order at its own call, and jobs only move forward: a pass sees
    every job listed when it began but one that ended meanwhile, which a new pass finds first;
    a job pushed back a place is seen twice."""
    sim = simulation()
    ended = [submit(sim, float(now)) for now in range(4)]
    held = submit(sim, 4.0, body(HOLD))
    first = page(sim, 10.0, limit="2")
    assert ids(first) == [ended[3].request_id, ended[2].request_id]
    sim.cancel(held.request_id, 11.0)  # leaves the tail of jobs not ended, for the front
    late = submit(sim, 11.0, body(HOLD))  # arrives in that tail
    seen = ids(first)
    cursor = first["next_cursor"]
    while cursor is not None:
        listed = page(sim, 11.0, limit="2", cursor=cursor)
        seen += ids(listed)
        cursor = listed["next_cursor"]
    assert seen == [
        ended[3].request_id,
        ended[2].request_id,
        ended[2].request_id,  # again: pushed back a place by the job that ended
        ended[1].request_id,
        ended[0].request_id,
        late.request_id,
    ]
    assert ids(page(sim, 11.0, limit="1")) == [held.request_id]


def test_sort_by_duration_lists_the_longest_first() -> None:
    """sort_by=duration: longest first, jobs not ended last; the default is latest end first."""
    sim = simulation()
    long = submit(sim, 0.0, body("[emulator:run=3]"))  # ends at 3
    medium = submit(sim, 0.0)  # ends at 1
    short = submit(sim, 2.8, body("[emulator:run=0.5]"))  # ends last, at 3.3
    running = submit(sim, 0.0, body(HOLD))
    assert ids(page(sim, 5.0, sort_by="duration")) == [
        long.request_id,
        medium.request_id,
        short.request_id,
        running.request_id,
    ]
    assert (
        ids(page(sim, 5.0, sort_by="ended_at"))
        == ids(page(sim, 5.0))
        == [
            short.request_id,
            long.request_id,
            medium.request_id,
            running.request_id,
        ]
    )


def test_only_the_asked_endpoint_is_listed() -> None:
    sim = simulation()
    lynx = submit(sim, 0.0)
    other = submit(sim, 0.0, endpoint="bytedance/lynx")
    sub = submit(sim, 0.0, subpath="fast")
    sim.advance(5.0)
    for endpoint, expected in (
        ("fal-ai/lynx", lynx),
        ("bytedance/lynx", other),
        ("fal-ai/lynx/fast", sub),
        ("/fal-ai/lynx/fast/", sub),
    ):
        query = parse_history_query([("endpoint_id", endpoint)], now=at(5.0), endpoints=ENDPOINTS)
        listed = history_page(sim.jobs(), query, lists="all", base_url=BASE)
        assert ids(listed) == [expected.request_id], endpoint
        assert listed["items"][0]["endpoint_id"] == endpoint.strip("/")


LYNX = ("endpoint_id", "fal-ai/lynx")


@pytest.mark.parametrize(
    ("pairs", "status", "words"),
    [
        ([], 422, "endpoint_id is required"),
        ([("endpoint_id", "lynx")], 422, "owner/alias"),
        ([("endpoint_id", "someone/else")], 404, "not found"),
        ([LYNX, LYNX], 422, "once"),
        ([LYNX, ("start", "yesterday")], 422, "ISO 8601"),
        ([LYNX, ("start", "2025-02-01"), ("end", "2025-01-01")], 422, "before start"),
        ([LYNX, ("status", "failed")], 422, "success, error, user_error"),
        ([LYNX, ("limit", "0")], 422, "1 to 100"),
        ([LYNX, ("limit", "101")], 422, "1 to 100"),
        ([LYNX, ("limit", "ten")], 422, "1 to 100"),
        ([LYNX, ("limit", "5"), ("limit", "6")], 422, "once"),
        ([LYNX, ("cursor", "page-two")], 422, "cursor"),
        ([LYNX, ("cursor", base64.b64encode(b"0").decode())], 422, "cursor"),
        ([LYNX, ("expand", "billing")], 422, "payloads"),
        ([LYNX, ("sort_by", "sent_at")], 422, "ended_at, duration"),
        ([LYNX, ("request_id", "req-1")], 422, "UUID"),
    ],
)
def test_bad_queries_are_refused(pairs: list[tuple[str, str]], status: int, words: str) -> None:
    """422 validation_error for a missing, repeated or malformed parameter; 404 not_found for
    an endpoint the emulator does not serve."""
    with pytest.raises(PlatformError) as refused:
        parse_history_query(pairs, now=at(0.0), endpoints=ENDPOINTS)
    assert refused.value.status == status
    assert refused.value.error_type == ("not_found" if status == 404 else "validation_error")
    assert words in refused.value.message


@pytest.mark.parametrize(
    ("expand", "payloads"),
    [([], False), ([""], False), (["payloads"], True), (["payloads,payloads"], True)],
)
def test_expand_is_a_list_repeated_or_comma_separated(expand: list[str], payloads: bool) -> None:
    pairs = [LYNX, *(("expand", value) for value in expand)]
    assert parse_history_query(pairs, now=at(0.0), endpoints=ENDPOINTS).payloads is payloads


@pytest.mark.parametrize(
    ("method", "path", "kind", "request_id"),
    [
        ("GET", "/v1/models/requests/by-endpoint", "history", None),
        ("GET", "/v1/models/requests/by-endpoint/", "history", None),
        ("DELETE", "/v1/models/requests/abc/payloads", "delete_payloads", "abc"),
        ("POST", "/v1/models/requests/by-endpoint", None, None),
        ("GET", "/v1/models/requests/abc/payloads", None, None),
        ("GET", "/v1/models/pricing", "pricing", None),
        ("GET", "/v1/models/pricing/", "pricing", None),
        ("POST", "/v1/models/pricing", None, None),
        ("GET", NO_ROUTE, None, None),
        ("GET", "/fal-ai/lynx/requests/by-endpoint", None, None),
    ],
)
def test_platform_paths(method: str, path: str, kind: str | None, request_id: str | None) -> None:
    route = parse_platform_path(method, path)
    assert (None if route is None else (route.kind, route.request_id)) == (
        None if kind is None else (kind, request_id)
    )


# --- over HTTP ---------------------------------------------------------------------------------


async def history(fal: Harness, **params: Any) -> dict[str, Any]:
    response = await fal.client.get(HISTORY, params={"endpoint_id": "fal-ai/lynx", **params})
    assert response.status_code == 200, response.text
    listed: dict[str, Any] = response.json()
    return listed


def assert_platform_error(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "docs_url", "request_id"}
    assert error["type"] == error_type
    assert error["message"]
    assert error["docs_url"].startswith("https://docs.fal.ai/platform-apis")
    uuid.UUID(error["request_id"])


async def test_the_history_is_served_under_api_url(fal: Harness) -> None:
    """api_url is {base_url}/v1, what a relay takes as FAL_API_URL; the history lists the
    emulator's own jobs, with their payloads when asked, and the output file is served."""
    assert fal.emulator.api_url == f"{fal.base_url}/v1"
    submitted = await fal.submit()
    await fal.completed(submitted)
    async with httpx.AsyncClient(base_url=fal.emulator.api_url, headers=AUTH) as api:
        response = await api.get(
            "/models/requests/by-endpoint",
            params={"endpoint_id": "fal-ai/lynx", "expand": "payloads"},
        )
    assert response.status_code == 200
    listed = response.json()
    assert (listed["next_cursor"], listed["has_more"]) == (None, False)
    (item,) = listed["items"]
    assert item["request_id"] == submitted["request_id"]
    assert item["status_code"] == 200
    assert item["json_input"] == BODY
    assert item["json_output"] == (await fal.client.get(submitted["response_url"])).json()
    video = await fal.client.get(item["json_output"]["video"]["url"])
    assert (video.status_code, video.headers["content-type"]) == (200, "video/mp4")
    sent = datetime.fromisoformat(item["sent_at"])
    assert (
        sent
        <= datetime.fromisoformat(item["started_at"])
        <= datetime.fromisoformat(item["ended_at"])
    )
    assert item["duration"] == pytest.approx(
        (datetime.fromisoformat(item["ended_at"]) - sent).total_seconds()
    )
    assert fal.emulator.stats()["calls"]["history"] == {"total": 1, "200": 1}


async def test_the_window_and_pages_over_http(fal: Harness) -> None:
    """start and end as the items spell their sent_at select exactly; the cursor pages."""
    submitted = [await fal.submit(body(f"take {n}")) for n in range(3)]
    for job in submitted:
        await fal.completed(job)
    items = (await history(fal))["items"]
    by_id = {item["request_id"]: item for item in items}
    sent = [by_id[job["request_id"]]["sent_at"] for job in submitted]
    window = await history(fal, start=sent[1], end=sent[2])
    assert ids(window) == [submitted[1]["request_id"]]
    paged: list[str] = []
    cursor: str | None = None
    while True:
        listed = await history(fal, limit=2, **({"cursor": cursor} if cursor else {}))
        paged += ids(listed)
        cursor = listed["next_cursor"]
        if cursor is None:
            break
    assert sorted(paged) == sorted(job["request_id"] for job in submitted)
    assert len(paged) == 3
    failed = await history(fal, status="error")
    assert failed["items"] == []


async def test_auth_and_errors_have_the_platform_apis_shape(
    start_emulator: StartEmulator,
) -> None:
    fal = await start_emulator()
    params = {"endpoint_id": "fal-ai/lynx"}
    async with httpx.AsyncClient(base_url=fal.base_url) as bare:
        assert_platform_error(await bare.get(HISTORY, params=params), 401, "authorization_error")
        wrong = await bare.get(HISTORY, params=params, headers={"Authorization": "Key nope"})
        assert_platform_error(wrong, 401, "authorization_error")
        assert "nope" not in wrong.text
        # Auth comes first, even for a route that does not exist.
        assert_platform_error(await bare.get(NO_ROUTE), 401, "authorization_error")
    assert_platform_error(await fal.client.get(NO_ROUTE), 404, "not_found")
    unknown = await fal.client.get(HISTORY, params={"endpoint_id": "fal-ai/flux/dev"})
    assert_platform_error(unknown, 404, "not_found")
    assert_platform_error(await fal.client.get(HISTORY), 422, "validation_error")
    bad_limit = await fal.client.get(HISTORY, params={**params, "limit": 500})
    assert_platform_error(bad_limit, 422, "validation_error")
    ids_seen = {(await fal.client.get(HISTORY)).json()["error"]["request_id"] for _ in range(2)}
    assert len(ids_seen) == 2  # each error names its own API call
    calls = fal.emulator.stats()["calls"]
    assert calls["history"] == {"total": 7, "401": 2, "404": 1, "422": 4}
    assert calls["other"] == {"total": 2, "401": 1, "404": 1}


async def test_the_history_mode_is_an_option_and_changes_at_runtime(
    start_emulator: StartEmulator,
) -> None:
    """all (the default) lists a running job with ended_at null; ended lists it only once it
    ended. POST /_emulator/config switches, as reconfigure does."""
    fal = await start_emulator()
    held = await fal.submit(body(HOLD))
    (item,) = (await history(fal))["items"]
    assert (item["request_id"], item["ended_at"], item["status_code"]) == (
        held["request_id"],
        None,
        None,
    )
    async with httpx.AsyncClient(base_url=fal.base_url) as bare:
        assert (await bare.get("/_emulator/config")).json()["history_lists"] == "all"
        changed = await bare.post("/_emulator/config", json={"history_lists": "ended"})
        assert changed.json()["history_lists"] == "ended"
        assert fal.emulator.history_lists == "ended"
        for bad in ("running", None, 1):
            refused = await bare.post("/_emulator/config", json={"history_lists": bad})
            assert refused.status_code == 400, bad
    assert (await history(fal))["items"] == []
    assert (await fal.client.put(held["cancel_url"])).status_code == 202
    (item,) = (await history(fal))["items"]
    assert (item["request_id"], item["status_code"]) == (held["request_id"], 499)
    fal.emulator.reconfigure(history_lists="all")
    assert len((await history(fal))["items"]) == 1
    with pytest.raises(ValueError, match="history_lists"):
        fal.emulator.reconfigure(history_lists="both")  # type: ignore[arg-type]

    ended = await start_emulator(history_lists="ended")
    await ended.submit(body(HOLD))
    assert (await history(ended))["items"] == []


def test_the_history_mode_on_the_command_line() -> None:
    parser = emulator_parser()
    assert config_from_arguments(parser.parse_args([])).history_lists == "all"
    args = parser.parse_args(["--history-lists", "ended"])
    assert config_from_arguments(args).history_lists == "ended"
    with pytest.raises(SystemExit):
        parser.parse_args(["--history-lists", "running"])
    assert "--history-lists" in parser.format_help()
    with pytest.raises(ValueError, match="history_lists"):
        EmulatorConfig(history_lists="running")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="emulator's own routes"):
        EmulatorConfig(endpoints=("v1/models",))


async def test_deleting_payloads_forgets_input_output_and_file(fal: Harness) -> None:
    """The answer lists the output file deleted; the history then shows null payloads and the
    file is gone; the queue's result stays; a second delete deletes nothing; unknown is 404."""
    submitted = await fal.submit()
    await fal.completed(submitted)
    request_id = submitted["request_id"]
    file_url = f"{fal.base_url}/_emulator/files/{request_id}/output.mp4"
    url = f"/v1/models/requests/{request_id}/payloads"
    deleted = await fal.client.delete(url)
    assert deleted.status_code == 200
    assert deleted.json() == {"cdn_delete_results": [{"link": file_url, "exception": None}]}
    (item,) = (await history(fal, expand="payloads"))["items"]
    assert (item["json_input"], item["json_output"], item["status_code"]) == (None, None, 200)
    assert (await fal.client.get(file_url)).status_code == 404
    assert (await fal.client.get(submitted["response_url"])).status_code == 200
    assert fal.job(request_id)["payloads_deleted"] is True
    assert fal.job(request_id)["input"] == BODY  # the emulator's own record keeps it
    assert (await fal.client.delete(url)).json() == {"cdn_delete_results": []}

    missing = await fal.client.delete(f"/v1/models/requests/{uuid.uuid4()}/payloads")
    assert_platform_error(missing, 404, "not_found")
    malformed = await fal.client.delete("/v1/models/requests/not-a-uuid/payloads")
    assert_platform_error(malformed, 422, "validation_error")
    async with httpx.AsyncClient(base_url=fal.base_url) as bare:
        assert_platform_error(await bare.delete(url), 401, "authorization_error")
    assert fal.emulator.stats()["calls"]["delete_payloads"] == {
        "total": 5,
        "200": 2,
        "404": 1,
        "422": 1,
        "401": 1,
    }


# --- a submit whose answer is lost -------------------------------------------------------------


async def lose_a_submit(fal: Harness, kind: str, payload: dict[str, Any]) -> None:
    """Submit once with a lost answer: what the client sees is an error and nothing else."""
    fal.emulator.reconfigure(faults=Faults.parse(f"submit=1:{kind}"))
    try:
        if kind == "lost-answer":
            with pytest.raises(httpx.TransportError):
                await fal.client.post("/fal-ai/lynx", json=payload)
        else:
            response = await fal.client.post("/fal-ai/lynx", json=payload)
            assert response.status_code == 502
            assert "x-fal-request-id" not in response.headers
            assert "request_id" not in response.text
    finally:
        fal.emulator.reconfigure(faults=None)


@pytest.mark.parametrize("lists", ["all", "ended"])
@pytest.mark.parametrize("kind", ["lost-answer", "lost-answer-502"])
async def test_a_lost_submit_answer_leaves_a_job_the_history_finds(
    start_emulator: StartEmulator, kind: str, lists: HistoryLists
) -> None:
    """The job was created and runs; a client that looks its input up in the history (once it
    ended, in the ended mode) finds it instead of paying for a second one."""
    fal = await start_emulator(history_lists=lists)
    payload = body("order 42")
    await lose_a_submit(fal, kind, payload)
    stats = fal.emulator.stats(include_jobs=True)
    assert (stats["submissions"], stats["submits_created_then_lost"]) == (1, 1)
    (record,) = stats["jobs"]
    assert record["faults"] == {"submit": {kind: 1}}

    if lists == "ended":
        status_url = f"{fal.base_url}/fal-ai/lynx/requests/{record['request_id']}/status"
        await fal.completed({"status_url": status_url})  # the test's own view: the oracle
    found = [
        item
        for item in (await history(fal, expand="payloads"))["items"]
        if item["json_input"] == payload
    ]
    assert [item["request_id"] for item in found] == [record["request_id"]]

    stats = fal.emulator.stats(include_jobs=True)
    assert stats["submissions"] == stats["distinct_inputs"] == 1  # no duplicate paid for


async def test_a_blind_retry_after_a_lost_answer_is_a_duplicate(fal: Harness) -> None:
    """What the stats show when a client retries instead of looking: two jobs, one input."""
    payload = body("order 43")
    await lose_a_submit(fal, "lost-answer-502", payload)
    await fal.submit(payload)
    stats = fal.emulator.stats(include_jobs=True)
    assert (stats["submissions"], stats["distinct_inputs"]) == (2, 1)
    assert stats["submits_created_then_lost"] == 1
    assert len((await history(fal))["items"]) == 2
