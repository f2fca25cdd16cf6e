"""The fal queue emulator: its pure simulation with a hand-held clock, and its HTTP server.

The server tests start a real ``FalEmulator`` on a free port and drive it with ``httpx``. Jobs run
for 0.01-0.05 s, or are held with ``[emulator:run=30]`` and released by cancelling, so nothing
waits on wall-clock sleeps: tests poll status until the state they need, under a short deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import structlog

from fal_emulator import EmulatorConfig, config_from_arguments, serve
from fal_emulator.config import parse_range
from fal_emulator.jobs import (
    Event,
    IllegalTransition,
    Phase,
    Simulation,
    next_phase,
    parse_directives,
    plan_job,
    video_dimensions,
)
from fal_emulator.wire import QueueRoute, authorized, parse_queue_path
from tests.unit.emulator_support import (
    BODY,
    DEADLINE,
    HOLD,
    KEY,
    Harness,
    StartEmulator,
    body,
    emulator_fixtures,
    emulator_parser,
    simulation,
    submit_job,
)

start_emulator, fal = emulator_fixtures()


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds, under the deadline: observing a server, not sleeping on it."""
    async with asyncio.timeout(DEADLINE):
        while True:
            if await check():
                return
            await asyncio.sleep(0.005)


# --- the pure simulation ---------------------------------------------------------------------


def submit_at(sim: Simulation, now: float, *, low: bool = False, prompt_suffix: str = "") -> str:
    return submit_job(sim, now, body(prompt_suffix), low_priority=low).request_id


def job_of(sim: Simulation, request_id: str) -> Any:
    job = sim.lookup(request_id)
    assert job is not None
    return job


def test_advance_replays_due_events_at_their_own_times() -> None:
    """One late advance() gives the same history as many timely ones: slots pass on at finish."""
    late, timely = simulation(max_concurrent=1), simulation(max_concurrent=1)
    ids = [submit_at(late, 0.0) for _ in range(3)]
    for _ in range(3):
        submit_at(timely, 0.0)
    late.advance(2.5)
    for step in range(1, 26):
        timely.advance(step / 10)
    for sim in (late, timely):
        first, second, third = (job_of(sim, request_id) for request_id in ids)
        assert (first.phase, first.completed_at) == (Phase.COMPLETED, 1.0)
        assert (second.started_at, second.completed_at) == (1.0, 2.0)
        assert (third.phase, third.started_at) == (Phase.IN_PROGRESS, 2.0)
        assert sim.counters.peak_running == 1
        assert sim.next_wakeup() == 3.0


def test_queue_wait_holds_a_job_in_queue_then_it_starts() -> None:
    sim = simulation(queue_wait=(0.5, 0.5))
    request_id = submit_at(sim, 10.0)
    sim.advance(10.4)
    assert job_of(sim, request_id).phase is Phase.IN_QUEUE
    sim.advance(10.5)
    assert job_of(sim, request_id).started_at == 10.5


def test_queue_position_counts_normal_before_low_and_drops_on_cancel() -> None:
    sim = simulation(max_concurrent=1)
    running = submit_at(sim, 0.0)
    low = submit_at(sim, 0.0, low=True)
    normal_a = submit_at(sim, 0.0)
    normal_b = submit_at(sim, 0.0)
    positions = {rid: sim.queue_position(job_of(sim, rid)) for rid in (low, normal_a, normal_b)}
    assert positions == {normal_a: 0, normal_b: 1, low: 2}
    sim.cancel(normal_a, 0.1)
    assert sim.queue_position(job_of(sim, normal_b)) == 0
    assert sim.queue_position(job_of(sim, low)) == 1
    sim.advance(1.0)  # the running job finishes: the normal job starts before the earlier low one
    assert job_of(sim, running).phase is Phase.COMPLETED
    assert job_of(sim, normal_b).phase is Phase.IN_PROGRESS
    assert job_of(sim, low).phase is Phase.IN_QUEUE
    assert sim.queue_position(job_of(sim, low)) == 0
    sim.cancel(normal_b, 1.5)  # cancelling a running job hands its slot on at once
    assert job_of(sim, low).started_at == 1.5
    assert sim.counters.running == 1


def test_results_expire_after_ttl() -> None:
    sim = simulation(result_ttl=5.0)
    request_id = submit_at(sim, 0.0)
    sim.advance(5.9)
    assert job_of(sim, request_id).phase is Phase.COMPLETED
    sim.advance(6.0)
    assert job_of(sim, request_id).phase is Phase.EXPIRED
    assert sim.next_wakeup() is None


def test_lifecycle_table_refuses_illegal_events() -> None:
    assert next_phase(Phase.IN_QUEUE, Event.START) is Phase.IN_PROGRESS
    with pytest.raises(IllegalTransition):
        next_phase(Phase.COMPLETED, Event.START)


def test_seeded_plans_are_reproducible_and_ignore_bodies_for_draws() -> None:
    """The n-th submission of a seeded emulator gets the same draws whatever earlier bodies were."""
    config = EmulatorConfig(run_time=(0.1, 0.9), failure_rate=0.5, seed=42)
    rng_a, rng_b = random.Random(42), random.Random(42)
    plan_job({"prompt": "invalid: no image"}, config, rng_a)
    plan_job(BODY, config, rng_b)
    a, b = plan_job(BODY, config, rng_a), plan_job(BODY, config, rng_b)
    assert a == b


@pytest.mark.parametrize(
    ("resolution", "aspect_ratio", "size"),
    [
        ("720p", "16:9", (1280, 720)),
        ("720p", "9:16", (720, 1280)),
        ("480p", "16:9", (854, 480)),
        ("580p", "1:1", (580, 580)),
    ],
)
def test_video_dimensions(resolution: str, aspect_ratio: str, size: tuple[int, int]) -> None:
    assert video_dimensions(resolution, aspect_ratio) == size


def test_directives_are_read_from_the_prompt() -> None:
    directives = parse_directives("x [emulator:run=0.05] [emulator:job-error] [emulator:what]")
    assert directives.run_time == 0.05
    assert directives.job_error
    assert not directives.result_500
    assert parse_directives("[emulator:run=soon]").run_time is None


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/fal-ai/lynx", QueueRoute("submit", "fal-ai/lynx")),
        ("POST", "/fal-ai/lynx/", QueueRoute("submit", "fal-ai/lynx")),
        ("POST", "/fal-ai/lynx/v2/x", QueueRoute("submit", "fal-ai/lynx", subpath="v2/x")),
        ("POST", "/workflows/o/a/b", QueueRoute("submit", "workflows/o/a", subpath="b")),
        ("GET", "/fal-ai/lynx/requests/r1", QueueRoute("result", "fal-ai/lynx", request_id="r1")),
        (
            "GET",
            "/fal-ai/lynx/requests/r1/status/",
            QueueRoute("status", "fal-ai/lynx", None, "r1"),
        ),
        (
            "GET",
            "/fal-ai/lynx/requests/r1/status/stream",
            QueueRoute("status_stream", "fal-ai/lynx", None, "r1"),
        ),
        ("PUT", "/fal-ai/lynx/requests/r1/cancel", QueueRoute("cancel", "fal-ai/lynx", None, "r1")),
        ("GET", "/fal-ai/lynx", None),
        ("PUT", "/fal-ai/lynx/requests/r1", None),
        ("GET", "/fal-ai", None),
    ],
)
def test_parse_queue_path(method: str, path: str, route: QueueRoute | None) -> None:
    assert parse_queue_path(method, path) == route


@pytest.mark.parametrize(
    ("header", "expected", "ok"),
    [
        (f"Key {KEY}", KEY, True),
        (f"key {KEY}", KEY, True),
        ("Key other", KEY, False),
        (f"Bearer {KEY}", KEY, False),
        ("Key ", None, False),
        (None, None, False),
        ("Key anything", None, True),
    ],
)
def test_authorized(header: str | None, expected: str | None, ok: bool) -> None:
    assert authorized(header, expected) is ok


def test_config_from_arguments() -> None:
    parser = emulator_parser()
    args = parser.parse_args(
        ["--run-time", "0.2-0.5", "--queue-wait", "1", "--max-concurrent", "4", "--seed", "9"]
    )
    assert args.port == 8470
    config = config_from_arguments(args)
    assert config.run_time == (0.2, 0.5)
    assert config.queue_wait == (1.0, 1.0)
    assert (config.max_concurrent, config.seed, config.fal_key) == (4, 9, None)
    assert (
        config_from_arguments(parser.parse_args(["--max-concurrent", "0"])).max_concurrent is None
    )
    assert parse_range("1e-3") == (0.001, 0.001)
    with pytest.raises(ValueError, match="LO <= HI"):
        parse_range("0.5-0.2")
    with pytest.raises(ValueError, match="failure_rate"):
        EmulatorConfig(failure_rate=1.5)


def test_config_repr_hides_the_key() -> None:
    assert KEY not in repr(EmulatorConfig(fal_key=KEY))


# --- the HTTP server -------------------------------------------------------------------------


async def test_queue_routes_need_the_key_and_never_echo_it(start_emulator: StartEmulator) -> None:
    harness = await start_emulator(fal_key="the-right-key")
    url = f"{harness.base_url}/fal-ai/lynx"
    async with httpx.AsyncClient() as bare:
        for headers in ({}, {"Authorization": "Key wrong-key"}, {"Authorization": "Bearer x"}):
            with structlog.testing.capture_logs() as logs:
                response = await bare.post(url, json=BODY, headers=headers)
            assert response.status_code == 401
            assert set(response.json()) == {"detail"}
            assert "wrong-key" not in response.text
            assert "wrong-key" not in repr(logs)
        status = await bare.get(f"{url}/requests/some-id/status")
        assert status.status_code == 401
        with structlog.testing.capture_logs() as logs:
            accepted = await bare.post(
                url, json=BODY, headers={"Authorization": "Key the-right-key"}
            )
        assert accepted.status_code == 200
        assert "the-right-key" not in repr(logs) + accepted.text
        # Stats need no key.
        assert (await bare.get(f"{harness.base_url}/_emulator/stats")).status_code == 200


async def test_submit_status_result_round_trip(start_emulator: StartEmulator) -> None:
    """Submit answers IN_QUEUE with working URLs; status goes 202 -> 200; the result is a video.

    A held job occupies the only slot first, so the 202 and the early 400 are certain, not raced.
    """
    fal = await start_emulator(run_time=(0.05, 0.05), max_concurrent=1)
    blocker = await fal.submit(body(HOLD))
    submitted = await fal.submit()
    request_id = submitted["request_id"]
    prefix = f"{fal.base_url}/fal-ai/lynx/requests/{request_id}"
    assert submitted["status"] == "IN_QUEUE"
    assert submitted["queue_position"] == 0
    assert submitted["response_url"] == prefix
    assert submitted["status_url"] == f"{prefix}/status"
    assert submitted["cancel_url"] == f"{prefix}/cancel"
    assert submitted["gateway_request_id"]

    early = await fal.client.get(submitted["status_url"])
    assert early.status_code == 202
    assert early.json() == {
        "status": "IN_QUEUE",
        "queue_position": 0,
        "request_id": request_id,
        "response_url": submitted["response_url"],
        "status_url": submitted["status_url"],
        "cancel_url": submitted["cancel_url"],
        "logs": None,
    }
    not_yet = await fal.client.get(submitted["response_url"])
    assert (not_yet.status_code, not_yet.json()) == (
        400,
        {"detail": "Request is still in progress"},
    )
    await fal.client.put(blocker["cancel_url"])  # frees the slot: the job runs for 0.05 s

    completed = await fal.wait_for(submitted["status_url"])
    assert completed["request_id"] == request_id
    assert completed["metrics"]["inference_time"] == pytest.approx(0.05)
    assert "error" not in completed
    final = await fal.client.get(submitted["status_url"])
    assert final.status_code == 200

    result = await fal.client.get(submitted["response_url"])
    assert result.status_code == 200
    assert result.headers["x-fal-request-id"] == request_id
    output = result.json()
    video = output["video"]
    assert video == {
        "url": f"{fal.base_url}/_emulator/files/{request_id}/output.mp4",
        "content_type": "video/mp4",
        "file_name": "output.mp4",
        "file_size": video["file_size"],
        "width": 1280,
        "height": 720,
        "fps": 16,
        "duration": 81 / 16,
        "num_frames": 81,
    }
    assert isinstance(output["seed"], int)

    async with httpx.AsyncClient() as bare:  # the file needs no key
        file = await bare.get(video["url"])
    assert file.status_code == 200
    assert file.headers["content-type"] == "video/mp4"
    assert len(file.content) == video["file_size"]
    assert file.content[4:8] == b"ftyp"


async def test_output_follows_the_input(fal: Harness) -> None:
    fields: dict[str, Any] = {"resolution": "480p", "aspect_ratio": "9:16", "frames_per_second": 24}
    submitted = await fal.submit(body(num_frames=48, seed=7, **fields))
    await fal.wait_for(submitted["status_url"])
    output = (await fal.client.get(submitted["response_url"])).json()
    video = output["video"]
    assert (video["width"], video["height"], video["fps"]) == (480, 854, 24)
    assert (video["num_frames"], video["duration"], output["seed"]) == (48, 2.0, 7)


async def test_logs_only_when_asked(fal: Harness) -> None:
    submitted = await fal.submit()
    await fal.wait_for(submitted["status_url"])
    without = await fal.client.get(submitted["status_url"], params={"logs": "0"})
    assert without.json()["logs"] is None
    with_logs = await fal.client.get(submitted["status_url"], params={"logs": "1"})
    lines = with_logs.json()["logs"]
    assert len(lines) >= 2
    for line in lines:
        assert set(line) == {"message", "level", "source", "timestamp"}
        assert line["source"] == "USER"
    assert (await fal.client.get(submitted["status_url"], params={"logs": "true"})).json()["logs"]


async def test_trailing_slashes_and_subpaths_are_accepted(fal: Harness) -> None:
    response = await fal.client.post("/fal-ai/lynx/some/subpath/", json=BODY)
    assert response.status_code == 200
    submitted = response.json()
    assert submitted["status_url"].startswith(f"{fal.base_url}/fal-ai/lynx/requests/")
    await fal.wait_for(submitted["status_url"] + "/")
    assert (await fal.client.get(submitted["response_url"] + "/")).status_code == 200
    cancel = await fal.client.put(submitted["cancel_url"] + "/")
    assert cancel.json() == {"status": "ALREADY_COMPLETED"}
    (record,) = (await fal.stats(jobs=1))["jobs"]
    assert record["subpath"] == "some/subpath"


async def test_unknown_ids_and_endpoints_are_404(fal: Harness) -> None:
    assert (await fal.client.post("/fal-ai/unknown", json=BODY)).status_code == 404
    unknown = "/fal-ai/lynx/requests/00000000-0000-4000-8000-000000000000"
    assert (await fal.client.get(f"{unknown}/status")).status_code == 404
    assert (await fal.client.get(unknown)).status_code == 404
    cancel = await fal.client.put(f"{unknown}/cancel")
    assert (cancel.status_code, cancel.json()) == (404, {"status": "NOT_FOUND"})
    # A request id is known only under the endpoint it was submitted to.
    submitted = await fal.submit()
    other = f"/bytedance/lynx/requests/{submitted['request_id']}/status"
    assert (await fal.client.get(other)).status_code == 404


async def test_bodies_that_are_not_json_objects_are_refused(fal: Harness) -> None:
    not_json = await fal.client.post("/fal-ai/lynx", content=b"{nope")
    assert not_json.status_code == 400
    assert "detail" in not_json.json()
    array = await fal.client.post("/fal-ai/lynx", json=[BODY])
    assert array.status_code == 422
    assert "detail" in array.json()
    assert (await fal.stats())["submissions"] == 0


@pytest.mark.parametrize(
    ("fields", "loc", "error_type", "message"),
    [
        ({"num_frames": 500}, ["body", "num_frames"], "less_than_equal", "less than or equal"),
        (
            {"image_url": "https://subjects.example.invalid/face.png"},
            ["body", "image_url"],
            "file_download_error",
            "Failed to download",
        ),
        ({"prompt": None}, ["body", "prompt"], "string_type", "valid string"),
    ],
)
async def test_invalid_input_completes_with_a_fastapi_422(
    fal: Harness, fields: dict[str, Any], loc: list[str], error_type: str, message: str
) -> None:
    submitted = await fal.submit(body(**fields))
    status = await fal.wait_for(submitted["status_url"])
    assert status["error"]
    assert status["error_type"] == "validation_error"
    result = await fal.client.get(submitted["response_url"])
    assert result.status_code == 422
    assert result.headers["x-fal-request-id"] == submitted["request_id"]
    (entry,) = result.json()["detail"]
    assert entry["loc"] == loc
    assert entry["type"] == error_type
    assert message in entry["msg"]


async def test_unknown_fields_are_ignored_like_fastapi(fal: Harness) -> None:
    submitted = await fal.submit(body(not_a_lynx_field=True))
    await fal.wait_for(submitted["status_url"])
    assert (await fal.client.get(submitted["response_url"])).status_code == 200


async def test_job_error_directive_is_a_retryable_503(fal: Harness) -> None:
    submitted = await fal.submit(body("[emulator:job-error]"))
    status = await fal.wait_for(submitted["status_url"])
    assert (status["error_type"], bool(status["error"])) == ("runner_disconnected", True)
    result = await fal.client.get(submitted["response_url"])
    assert result.status_code == 503
    assert result.json()["error_type"] == "runner_disconnected"
    assert result.headers["x-fal-request-id"] == submitted["request_id"]
    assert result.headers["X-Fal-Error-Type"] == "runner_disconnected"
    assert result.headers["X-Fal-Retryable"] == "true"


async def test_refuse_input_directive_is_a_422_for_an_input_the_schema_accepts(
    fal: Harness,
) -> None:
    submitted = await fal.submit(body("[emulator:refuse-input]"))
    await fal.wait_for(submitted["status_url"])
    result = await fal.client.get(submitted["response_url"])
    assert result.status_code == 422
    (problem,) = result.json()["detail"]
    assert problem["loc"] == ["body", "image_url"]
    assert "face" in problem["msg"]
    assert parse_directives("a [emulator:refuse-input]").refuse_input
    assert not parse_directives("a plain prompt").refuse_input


async def test_result_500_directive_is_the_models_own_error(fal: Harness) -> None:
    submitted = await fal.submit(body("[emulator:result-500]"))
    status = await fal.wait_for(submitted["status_url"])
    assert "error" not in status
    result = await fal.client.get(submitted["response_url"])
    assert (result.status_code, result.json()) == (500, {"detail": "Internal Server Error"})
    assert result.headers["x-fal-request-id"] == submitted["request_id"]


async def test_cancel_queued_running_and_completed(start_emulator: StartEmulator) -> None:
    fal = await start_emulator(max_concurrent=1)
    running = await fal.submit(body(HOLD))
    queued = await fal.submit(body(HOLD))
    await fal.wait_for(running["status_url"], "IN_PROGRESS")

    for job in (queued, running):
        cancel = await fal.client.put(job["cancel_url"])
        assert (cancel.status_code, cancel.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        status = (await fal.client.get(job["status_url"])).json()
        assert (status["status"], status["error_type"]) == ("COMPLETED", "client_cancelled")
        result = await fal.client.get(job["response_url"])
        assert result.status_code == 400
        assert result.json() == {
            "detail": "Request was cancelled",
            "error_type": "client_cancelled",
        }
        assert result.headers["x-fal-request-id"] == job["request_id"]

    again = await fal.client.put(running["cancel_url"])
    assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
    # The freed slot serves the next job at once.
    quick = await fal.submit()
    await fal.wait_for(quick["status_url"])
    stats = await fal.stats()
    assert (stats["cancelled"], stats["running"], stats["queued"]) == (2, 0, 0)


async def test_queue_position_with_one_slot(start_emulator: StartEmulator) -> None:
    fal = await start_emulator(max_concurrent=1)
    first = await fal.submit(body(HOLD))
    second = await fal.submit(body(HOLD))
    third = await fal.submit(body(HOLD))
    assert (second["queue_position"], third["queue_position"]) == (0, 1)
    status = await fal.client.get(third["status_url"])
    assert (status.status_code, status.json()["queue_position"]) == (202, 1)
    await fal.client.put(first["cancel_url"])
    assert (await fal.client.get(second["status_url"])).json()["status"] == "IN_PROGRESS"
    assert (await fal.client.get(third["status_url"])).json()["queue_position"] == 0


async def test_low_priority_starts_after_normal(start_emulator: StartEmulator) -> None:
    fal = await start_emulator(max_concurrent=1)
    blocker = await fal.submit(body(HOLD))
    low = await fal.submit(body(HOLD), headers={"X-Fal-Queue-Priority": "low"})
    normal = await fal.submit(body(HOLD), headers={"X-Fal-Queue-Priority": "normal"})
    assert (low["queue_position"], normal["queue_position"]) == (0, 0)
    assert (await fal.client.get(low["status_url"])).json()["queue_position"] == 1
    await fal.client.put(blocker["cancel_url"])
    assert (await fal.client.get(normal["status_url"])).json()["status"] == "IN_PROGRESS"
    low_status = (await fal.client.get(low["status_url"])).json()
    assert (low_status["status"], low_status["queue_position"]) == ("IN_QUEUE", 0)


async def test_results_expire_after_the_ttl(start_emulator: StartEmulator) -> None:
    fal = await start_emulator(result_ttl=0.3)
    submitted = await fal.submit()
    await fal.wait_for(submitted["status_url"])
    assert (await fal.client.get(submitted["response_url"])).status_code == 200

    async def forgotten() -> bool:
        return (await fal.client.get(submitted["status_url"])).status_code == 404

    await eventually(forgotten)
    assert (await fal.client.get(submitted["response_url"])).status_code == 404
    assert (await fal.client.put(submitted["cancel_url"])).status_code == 404


async def test_in_flight_lasts_from_submit_to_first_result_fetch_or_cancel(fal: Harness) -> None:
    jobs = [await fal.submit() for _ in range(3)]
    held = await fal.submit(body(HOLD))
    early = await fal.client.get(held["response_url"])  # 400: still running, still in flight
    assert early.status_code == 400
    for job in jobs:
        await fal.wait_for(job["status_url"])
    stats = await fal.stats()
    assert (stats["in_flight"], stats["peak_in_flight"]) == (4, 4)
    for job in jobs:
        await fal.client.get(job["response_url"])
    await fal.client.get(jobs[0]["response_url"])  # a second fetch changes nothing
    assert (await fal.stats())["in_flight"] == 1
    await fal.client.put(held["cancel_url"])
    again = await fal.submit(body("[emulator:job-error]"))
    await fal.wait_for(again["status_url"])
    await fal.client.get(again["response_url"])  # a 503 ends the window too
    stats = await fal.stats()
    assert (stats["in_flight"], stats["peak_in_flight"], stats["submissions"]) == (0, 4, 5)
    assert stats["calls"]["result"]["400"] == 1
    assert stats["calls"]["result"]["200"] == 4
    assert stats["calls"]["result"]["503"] == 1
    assert stats["calls"]["submit"] == {"total": 5, "200": 5}
    assert stats["submissions_by_endpoint"] == {"fal-ai/lynx": 5}
    assert stats["peak_running"] >= 1


async def test_failure_rate_one_fails_every_job_reproducibly(start_emulator: StartEmulator) -> None:
    runs = []
    for _ in range(2):
        fal = await start_emulator(failure_rate=1.0, seed=1234, run_time=(0.01, 0.02))
        jobs = [await fal.submit() for _ in range(3)]
        statuses = [await fal.wait_for(job["status_url"]) for job in jobs]
        assert {status["error_type"] for status in statuses} == {"runner_disconnected"}
        for job in jobs:
            assert (await fal.client.get(job["response_url"])).status_code == 503
        stats = await fal.stats()
        assert (stats["failed"], stats["succeeded"], stats["completed"]) == (3, 0, 3)
        runs.append([status["metrics"]["inference_time"] for status in statuses])
    assert runs[0] == pytest.approx(runs[1])  # same seed, same run times


async def test_seed_fixes_the_output_seed(start_emulator: StartEmulator) -> None:
    seeds = []
    for _ in range(2):
        fal = await start_emulator(seed=99)
        submitted = await fal.submit()
        await fal.wait_for(submitted["status_url"])
        seeds.append((await fal.client.get(submitted["response_url"])).json()["seed"])
    assert seeds[0] == seeds[1]


async def test_stats_record_every_submission_with_its_options(fal: Harness) -> None:
    headers = {
        "X-Fal-Queue-Priority": "low",
        "X-Fal-Runner-Hint": "lynx-warm",
        "X-Fal-Request-Timeout": "30",
        "X-Fal-No-Retry": "1",
    }
    webhook = "https://hooks.example.com/fal?token=abc"
    response = await fal.client.post(
        "/bytedance/lynx", json=BODY, headers=headers, params={"fal_webhook": webhook}
    )
    assert response.status_code == 200
    (record,) = (await fal.stats(jobs=1))["jobs"]
    assert record["request_id"] == response.json()["request_id"]
    assert record["endpoint"] == "bytedance/lynx"
    assert record["input"] == BODY
    assert record["headers_recorded"] == headers
    assert record["webhook"] == webhook
    assert record["low_priority"] is True
    assert record["state"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert record["submitted_at"]
    assert "jobs" not in await fal.stats()
    assert fal.emulator.stats()["submissions_by_endpoint"] == {"bytedance/lynx": 1}


async def test_status_stream_sends_events_until_completed(fal: Harness) -> None:
    submitted = await fal.submit(body("[emulator:run=0.05]"))
    events: list[dict[str, Any]] = []
    async with (
        asyncio.timeout(DEADLINE),
        fal.client.stream("GET", submitted["status_url"] + "/stream") as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(httpx.Response(200, content=line[6:]).json())
    assert events[-1]["status"] == "COMPLETED"
    assert {event["request_id"] for event in events} == {submitted["request_id"]}


def test_ten_thousand_jobs_in_flight_stay_cheap() -> None:
    """10,000 held jobs: no per-job timers or tasks, so submitting, positioning and advancing
    them is heap and bisect work (this test takes well under a second)."""
    sim = simulation(max_concurrent=10)
    ids = [submit_at(sim, index * 1e-6, prompt_suffix=HOLD) for index in range(10_000)]
    sim.advance(1.0)
    assert (sim.counters.running, sim.queued) == (10, 9_990)
    assert sim.queue_position(job_of(sim, ids[-1])) == 9_989
    for request_id in ids[:10]:
        sim.cancel(request_id, 2.0)
    assert job_of(sim, ids[10]).started_at == 2.0
    assert sim.queue_position(job_of(sim, ids[-1])) == 9_979
    assert sim.counters.peak_in_flight == 10_000


async def test_serve_logs_its_base_url_and_stops_when_cancelled() -> None:
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(serve(EmulatorConfig(fal_key=KEY), "127.0.0.1", 0))

        async def is_listening() -> bool:
            return any(entry["event"] == "emulator_listening" for entry in logs)

        await eventually(is_listening)
        (listening,) = [entry for entry in logs if entry["event"] == "emulator_listening"]
        async with httpx.AsyncClient() as client:
            stats = await client.get(f"{listening['base_url']}/_emulator/stats")
        assert stats.status_code == 200
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert KEY not in repr(logs)
