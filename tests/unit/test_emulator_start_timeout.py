"""The emulator's start timeout: ``X-Fal-Request-Timeout`` / ``X-Fal-Request-Start-Timeout``.

A job still IN_QUEUE that many seconds after its submit never runs: it completes with
``error_type: request_timeout`` and its result is fal's 504 with ``X-Fal-Request-Timeout-Type:
user``. The simulation is checked with a hand-held clock; the server with a held first job in
the only slot, so the second job's timeout is certain, and with status streams and a webhook
receiver that the server itself wakes, never with sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from multidict import CIMultiDict

from fal_emulator.jobs import (
    CancelOutcome,
    Event,
    Job,
    Outcome,
    Phase,
    Simulation,
    next_phase,
)
from fal_emulator.webhooks import webhook_body
from fal_emulator.wire import QueueUrls, completed_result_reply, start_timeout, status_reply
from tests.unit.emulator_support import (
    BODY,
    DEADLINE,
    HOLD,
    Harness,
    Receiver,
    StartEmulator,
    body,
    emulator_fixtures,
    receiver_fixtures,
    simulation,
    submit_job,
)

TIMED_OUT = {"detail": "Request timed out", "error_type": "request_timeout"}

start_emulator, fal = emulator_fixtures(max_concurrent=1)
start_receiver, receiver = receiver_fixtures()


# --- the pure simulation ---------------------------------------------------------------------


def submit_at(
    sim: Simulation, now: float, *, timeout: float | None = None, webhook: str | None = None
) -> Job:
    return submit_job(sim, now, webhook=webhook, start_timeout=timeout)


def test_a_job_without_a_free_slot_times_out_at_its_deadline_and_frees_nothing() -> None:
    sim = simulation(max_concurrent=1)
    first = submit_at(sim, 0.0)
    second = submit_at(sim, 0.0, timeout=0.05)
    third = submit_at(sim, 0.0)
    assert sim.next_wakeup() == 0.05
    assert sim.queue_position(third) == 1

    assert sim.advance(0.049) == []
    assert second.phase is Phase.IN_QUEUE
    assert sim.advance(0.05) == [second]
    assert (second.phase, second.outcome) == (Phase.COMPLETED, Outcome.START_TIMEOUT)
    assert (second.started_at, second.completed_at) == (None, 0.05)
    # It left the queue; the slot is still the first job's, and the third moved up.
    assert (first.phase, sim.counters.running, sim.queued) == (Phase.IN_PROGRESS, 1, 1)
    assert sim.queue_position(third) == 0
    assert sim.next_wakeup() == 1.0

    sim.advance(1.0)
    assert (first.outcome, third.phase, third.started_at) == (
        Outcome.SUCCEEDED,
        Phase.IN_PROGRESS,
        1.0,
    )
    counters = sim.counters
    assert counters.outcomes[Outcome.START_TIMEOUT] == 1
    assert (counters.completed, counters.in_flight, counters.peak_running) == (2, 3, 1)
    assert sim.cancel(second.request_id, 1.0) is CancelOutcome.ALREADY_COMPLETED


def test_a_job_that_starts_in_time_is_unaffected() -> None:
    sim = simulation(max_concurrent=1)
    submit_at(sim, 0.0)
    # The slot frees at 1.0, exactly the deadline: starting at the deadline is in time.
    on_the_dot = submit_at(sim, 0.0, timeout=1.0)
    sim.advance(2.0)
    assert (on_the_dot.started_at, on_the_dot.completed_at) == (1.0, 2.0)
    assert on_the_dot.outcome is Outcome.SUCCEEDED
    assert sim.counters.outcomes[Outcome.START_TIMEOUT] == 0

    # Starts at once, then runs well past its deadline: the deadline no longer matters.
    free = simulation()
    alone = submit_at(free, 0.0, timeout=0.05)
    assert free.next_wakeup() == 1.0
    free.advance(0.5)
    assert (alone.phase, alone.started_at) == (Phase.IN_PROGRESS, 0.0)
    free.advance(1.0)
    assert (alone.outcome, alone.completed_at) == (Outcome.SUCCEEDED, 1.0)


def test_a_queue_wait_past_the_deadline_times_out_even_with_free_slots() -> None:
    sim = simulation(queue_wait=(0.5, 0.5))
    late = submit_at(sim, 10.0, timeout=0.2)
    in_time = submit_at(sim, 10.0, timeout=0.5)
    sim.advance(11.0)
    assert (late.outcome, late.completed_at) == (Outcome.START_TIMEOUT, 10.2)
    assert (in_time.phase, in_time.started_at) == (Phase.IN_PROGRESS, 10.5)


def test_one_late_advance_gives_the_same_history_as_timely_ones() -> None:
    late, timely = simulation(max_concurrent=1), simulation(max_concurrent=1)
    jobs: list[list[Job]] = []
    for sim in (late, timely):
        jobs.append([submit_at(sim, 0.0, timeout=timeout) for timeout in (None, 0.5, 1.5, 1.0)])
    late.advance(3.0)
    for step in range(1, 31):
        timely.advance(step / 10)
    histories = [
        [(job.outcome, job.started_at, job.completed_at) for job in sim_jobs] for sim_jobs in jobs
    ]
    assert histories[0] == histories[1]
    # At 1.0 the slot frees and goes to the 1.5 s job (submitted first) before the 1.0 s job's
    # deadline is replayed, so that one never starts.
    assert histories[0] == [
        (Outcome.SUCCEEDED, 0.0, 1.0),
        (Outcome.START_TIMEOUT, None, 0.5),
        (Outcome.SUCCEEDED, 1.0, 2.0),
        (Outcome.START_TIMEOUT, None, 1.0),
    ]


def test_a_job_cancelled_before_its_deadline_stays_cancelled() -> None:
    sim = simulation(max_concurrent=1)
    submit_at(sim, 0.0)
    job = submit_at(sim, 0.0, timeout=0.5)
    assert sim.cancel(job.request_id, 0.1) is CancelOutcome.REQUESTED
    sim.advance(5.0)
    assert (job.outcome, job.completed_at) == (Outcome.CANCELLED, 0.1)
    assert sim.counters.outcomes[Outcome.START_TIMEOUT] == 0


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan"), float("inf")])
def test_the_simulation_refuses_a_bad_start_timeout(timeout: float) -> None:
    sim = simulation()
    with pytest.raises(ValueError, match="start_timeout"):
        submit_at(sim, 0.0, timeout=timeout)
    assert sim.counters.submissions == 0


def test_only_a_queued_job_can_time_out() -> None:
    assert next_phase(Phase.IN_QUEUE, Event.START_TIMEOUT) is Phase.COMPLETED
    assert Outcome.START_TIMEOUT.failed


def test_status_result_and_webhook_of_a_timed_out_job() -> None:
    sim = simulation(max_concurrent=1)
    submit_at(sim, 0.0)
    job = submit_at(sim, 0.0, timeout=0.05, webhook="https://hooks.example.com/fal")
    sim.advance(0.1)
    assert sim.drain_completed() == [job]

    urls = QueueUrls.build("http://fal.test", job.endpoint, job.request_id)
    status = status_reply(job, 0.1, 0, urls, with_logs=True)
    assert status.status == 200
    assert status.body["status"] == "COMPLETED"
    assert (status.body["error"], status.body["error_type"]) == (
        "Request timed out",
        "request_timeout",
    )
    assert status.body["metrics"] == {"inference_time": None}
    assert status.body["logs"] == []

    result = completed_result_reply(job, "http://fal.test")
    assert (result.status, result.body) == (504, TIMED_OUT)
    assert result.headers == {
        "x-fal-request-id": job.request_id,
        "X-Fal-Error-Type": "request_timeout",
        "X-Fal-Request-Timeout-Type": "user",
    }
    assert webhook_body(job, "http://fal.test") == {
        "request_id": job.request_id,
        "gateway_request_id": job.gateway_request_id,
        "status": "ERROR",
        "error": "Invalid status code: 504",
        "payload": TIMED_OUT,
    }


# --- the header ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"X-Fal-Request-Timeout": "30"}, 30.0),
        ({"x-fal-request-timeout": "0.05"}, 0.05),
        ({"X-Fal-Request-Start-Timeout": " 1.5 "}, 1.5),
        ({"X-Fal-Request-Timeout": "1e-3"}, 0.001),
        # Both: the newer name counts.
        ({"X-Fal-Request-Timeout": "30", "X-Fal-Request-Start-Timeout": "2"}, 2.0),
    ],
)
def test_start_timeout_header(headers: Mapping[str, str], expected: float | None) -> None:
    assert start_timeout(CIMultiDict(headers)) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Fal-Request-Timeout": "0"},
        {"X-Fal-Request-Timeout": "-5"},
        {"X-Fal-Request-Timeout": "soon"},
        {"X-Fal-Request-Timeout": ""},
        {"X-Fal-Request-Start-Timeout": "nan"},
        {"X-Fal-Request-Start-Timeout": "inf"},
        # The newer name counts, but a bad older one is still refused.
        {"X-Fal-Request-Timeout": "soon", "X-Fal-Request-Start-Timeout": "2"},
    ],
)
def test_bad_start_timeout_headers_are_refused(headers: Mapping[str, str]) -> None:
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        start_timeout(CIMultiDict(headers))


# --- the HTTP server -------------------------------------------------------------------------


async def test_a_job_queued_past_its_start_timeout_answers_a_user_504(fal: Harness) -> None:
    held = await fal.submit(body(HOLD))
    submitted = await fal.submit(headers={"X-Fal-Request-Timeout": "0.05"})
    assert submitted["queue_position"] == 0

    status = await fal.final_status(submitted["status_url"])
    assert status["status"] == "COMPLETED"
    assert (status["error"], status["error_type"]) == ("Request timed out", "request_timeout")
    assert status["metrics"] == {"inference_time": None}

    result = await fal.client.get(submitted["response_url"])
    assert (result.status_code, result.json()) == (504, TIMED_OUT)
    assert result.headers["x-fal-request-id"] == submitted["request_id"]
    assert result.headers["X-Fal-Error-Type"] == "request_timeout"
    assert result.headers["X-Fal-Request-Timeout-Type"] == "user"
    # Never ran, so the held job kept the only slot.
    assert (await fal.status(held["status_url"]))["status"] == "IN_PROGRESS"
    cancel = await fal.client.put(submitted["cancel_url"])
    assert (cancel.status_code, cancel.json()) == (400, {"status": "ALREADY_COMPLETED"})

    stats = fal.emulator.stats(include_jobs=True)
    assert stats["outcomes"]["start_timeout"] == 1
    assert (stats["completed"], stats["failed"], stats["succeeded"]) == (1, 1, 0)
    assert (stats["queued"], stats["running"], stats["in_flight"]) == (0, 1, 1)
    record = stats["jobs"][1]
    assert record["request_id"] == submitted["request_id"]
    assert (record["state"], record["outcome"]) == ("COMPLETED", "start_timeout")
    assert record["start_timeout"] == 0.05
    assert record["headers_recorded"] == {"X-Fal-Request-Timeout": "0.05"}


async def test_a_job_that_starts_in_time_completes_normally(fal: Harness) -> None:
    held = await fal.submit(body(HOLD))
    waiting = await fal.submit(headers={"X-Fal-Request-Start-Timeout": "30"})
    assert (await fal.status(waiting["status_url"]))["status"] == "IN_QUEUE"
    assert (await fal.client.put(held["cancel_url"])).status_code == 202

    status = await fal.final_status(waiting["status_url"])
    assert status["status"] == "COMPLETED"
    assert "error" not in status
    result = await fal.client.get(waiting["response_url"])
    assert result.status_code == 200
    assert "X-Fal-Request-Timeout-Type" not in result.headers
    stats = fal.emulator.stats(include_jobs=True)
    assert stats["outcomes"]["start_timeout"] == 0
    assert stats["succeeded"] == 1
    assert stats["jobs"][1]["start_timeout"] == 30.0


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf", ""])
async def test_a_bad_start_timeout_is_a_400_and_makes_no_job(fal: Harness, value: str) -> None:
    for name in ("X-Fal-Request-Timeout", "X-Fal-Request-Start-Timeout"):
        response = await fal.client.post("/fal-ai/lynx", json=BODY, headers={name: value})
        assert response.status_code == 400
        assert name in response.json()["detail"]
    stats = fal.emulator.stats()
    assert stats["submissions"] == 0
    assert stats["calls"]["submit"] == {"total": 2, "400": 2}


async def test_a_timed_out_job_posts_an_error_webhook(
    start_emulator: StartEmulator, receiver: Receiver
) -> None:
    fal = await start_emulator(webhook_retry_delays=())
    await fal.submit(body(HOLD))
    submitted = await fal.submit(headers={"X-Fal-Request-Timeout": "0.05"}, webhook=receiver.url)
    async with asyncio.timeout(DEADLINE):
        await receiver.arrived.wait()
    assert [delivery.json for delivery in receiver.received] == [
        {
            "request_id": submitted["request_id"],
            "gateway_request_id": submitted["gateway_request_id"],
            "status": "ERROR",
            "error": "Invalid status code: 504",
            "payload": TIMED_OUT,
        }
    ]
