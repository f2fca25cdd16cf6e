"""The emulator's fault injection and runtime control: every kind on every endpoint it applies to.

The truth a relay test relies on is checked here: a faulted submit creates no job, except
``lost-answer`` and ``lost-answer-502``, which create exactly one and then drop the connection or
answer the gateway's 502 (counted as ``submits_created_then_lost``); a faulted status, result or
cancel leaves its job as it was; ``500-model``/``503-model`` are the job's real fate and show in
its outcome. Faults are switched on with rate 1 (so each call is certain to be faulted) around
the one call a test is about, and off again with ``reconfigure``; nothing waits on a sleep.
"""

from __future__ import annotations

import random
import time
from typing import Any

import httpx
import pytest

from fal_emulator import EndpointFaults, FaultKind, Faults, config_from_arguments
from fal_emulator.faults import DEFAULT_FAULT_KINDS, FaultInjector, parse_fault_spec
from fal_emulator.jobs import Outcome
from tests.unit.emulator_support import (
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

RETRY_AFTER = 0.05
SLOW = 0.05
PER_CALL_KINDS = ("429", "502", "503", "504", "reset", "slow")

start_emulator, fal = emulator_fixtures(seed=7)


def faults(spec: str, **options: Any) -> Faults:
    return Faults.parse(spec, **{"retry_after": RETRY_AFTER, "slow": SLOW, **options})


# --- settings and draws ----------------------------------------------------------------------


def test_spec_names_kinds_per_endpoint_and_defaults_the_rest() -> None:
    parsed = faults("status=0.2, result=0.1:503-model+429, submit=0.05:lost-answer")
    assert parsed.status == EndpointFaults(0.2, DEFAULT_FAULT_KINDS)
    assert parsed.result == EndpointFaults(0.1, (FaultKind.MODEL_503, FaultKind.RATE_LIMITED))
    assert parsed.submit == EndpointFaults(0.05, (FaultKind.LOST_ANSWER,))
    assert parsed.cancel.rate == 0.0
    assert parsed.active
    assert not Faults().active
    assert (parsed.retry_after, parsed.slow) == (RETRY_AFTER, (SLOW, SLOW))
    # Every spelling comes back to the same settings.
    assert faults(parsed.spec()) == parsed
    assert Faults.from_json(parsed.to_json()) == parsed
    assert Faults.from_json(None) == Faults()
    assert Faults.from_json("status=1:429") == Faults.parse("status=1:429")
    short = Faults.from_json({"status": 0.5, "kinds": ["reset"], "slow": 0.1})
    assert short.status == EndpointFaults(0.5, (FaultKind.RESET,))
    assert short.slow == (0.1, 0.1)


def test_both_lost_answers_are_submit_faults_asked_for_by_name() -> None:
    """lost-answer and lost-answer-502 create the job first, so they are never a default kind."""
    parsed = faults("submit=0.1:lost-answer+lost-answer-502")
    assert parsed.submit.kinds == (FaultKind.LOST_ANSWER, FaultKind.LOST_ANSWER_502)
    assert Faults.from_json(parsed.to_json()) == parsed
    assert [kind for kind in FaultKind if kind.loses_answer] == list(parsed.submit.kinds)
    assert not set(parsed.submit.kinds) & set(DEFAULT_FAULT_KINDS)
    assert faults("submit=0.1").submit.kinds == DEFAULT_FAULT_KINDS


def test_the_kinds_list_serves_each_endpoint_with_what_applies_to_it() -> None:
    parsed = Faults.parse("submit=0.1,status=0.1,result=0.1", kinds="lost-answer,503-model,429")
    assert parsed.submit.kinds == (FaultKind.LOST_ANSWER, FaultKind.RATE_LIMITED)
    assert parsed.status.kinds == (FaultKind.RATE_LIMITED,)
    assert parsed.result.kinds == (FaultKind.MODEL_503, FaultKind.RATE_LIMITED)


@pytest.mark.parametrize(
    ("spec", "kinds", "message"),
    [
        ("status=0.2:lost-answer", None, "does not apply to status"),
        ("result=0.2:lost-answer-502", None, "does not apply to result"),
        ("submit=0.2:503-model", None, "does not apply to submit"),
        ("status=1.5", None, r"within \[0, 1\]"),
        ("status=nan", None, r"within \[0, 1\]"),
        ("stats=0.1", None, "ENDPOINT=RATE"),
        ("status", None, "ENDPOINT=RATE"),
        ("status=0.1,status=0.2", None, "twice"),
        ("status=0.1:teapot", None, "unknown fault kind"),
        ("status=0.1", "lost-answer", "applies to status"),
    ],
)
def test_bad_specs_are_refused(spec: str, kinds: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Faults.parse(spec, kinds=kinds)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="retry_after"):
        Faults(retry_after=-1)
    with pytest.raises(ValueError, match="slow"):
        Faults(slow=(0.5, 0.1))
    with pytest.raises(ValueError, match="repeat"):
        Faults(status=EndpointFaults(0.1, (FaultKind.RESET, FaultKind.RESET)))
    bad_values: list[object] = [[], {"status": "x"}, {"status": {"rate": 0.1, "x": 1}}, {"x": 1}]
    for bad in bad_values:
        with pytest.raises(ValueError, match=r"\w"):
            Faults.from_json(bad)


def test_command_line_faults() -> None:
    parser = emulator_parser()
    assert config_from_arguments(parser.parse_args([])).faults == Faults()
    args = parser.parse_args(
        [
            "--faults",
            "status=0.2,result=0.1:503-model+429,submit=0.05:lost-answer",
            "--fault-kinds",
            "429,reset",
            "--fault-retry-after",
            "0.05",
            "--fault-slow",
            "0.01-0.02",
        ]
    )
    config = config_from_arguments(args)
    assert config.faults == Faults.parse(
        "status=0.2,result=0.1:503-model+429,submit=0.05:lost-answer",
        kinds="429,reset",
        retry_after=0.05,
        slow=(0.01, 0.02),
    )
    assert config.faults.status.kinds == (FaultKind.RATE_LIMITED, FaultKind.RESET)
    help_text = parser.format_help()
    for word in (
        "--faults",
        "--fault-kinds",
        "lost-answer-502",
        "submits_created_then_lost",
        "503-model",
        "Retry-After",
    ):
        assert word in help_text


@pytest.mark.parametrize(
    "argv",
    [
        ["--faults", "status=2"],
        ["--faults", "status=0.1:lost-answer"],
        ["--fault-kinds", "teapot"],
        ["--faults", "status=0.1", "--fault-kinds", "lost-answer"],
        ["--fault-kinds", "lost-answer", "--faults", "status=0.1"],
        ["--fault-retry-after", "-1"],
    ],
)
def test_bad_fault_options_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        emulator_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_draws_are_seeded_and_the_rate_is_shared_among_kinds() -> None:
    spec = faults("status=0.5:429+reset,result=0.4:503-model+429")
    first, second = FaultInjector(spec, random.Random(3)), FaultInjector(spec, random.Random(3))
    endpoints = ["status", "result", "submit", "cancel"] * 50
    draws = [first.draw(endpoint) for endpoint in endpoints]
    assert draws == [second.draw(endpoint) for endpoint in endpoints]
    # Unfaulted endpoints draw nothing, and a per-call draw is never a model fate.
    assert {draws[i] for i, e in enumerate(endpoints) if e in ("submit", "cancel")} == {None}
    assert FaultKind.MODEL_503 not in draws

    injector = FaultInjector(spec, random.Random(5))
    result_calls = [injector.draw("result") for _ in range(4000)]
    fates = [injector.model_fate() for _ in range(4000)]
    # result=0.4 over two kinds: 0.2 of calls get a 429, 0.2 of jobs the model fate.
    assert 0.17 < result_calls.count(FaultKind.RATE_LIMITED) / 4000 < 0.23
    assert 0.17 < fates.count(FaultKind.MODEL_503) / 4000 < 0.23
    assert set(fates) == {None, FaultKind.MODEL_503}


def test_no_faults_draws_nothing_from_the_rng() -> None:
    rng = random.Random(8)
    injector = FaultInjector(Faults(), rng)
    assert all(injector.draw(e) is None for e in ("submit", "status", "result", "cancel"))
    assert injector.model_fate() is None
    assert rng.random() == random.Random(8).random()


def test_a_model_fault_turns_only_jobs_that_would_succeed() -> None:
    sim = simulation()
    plans = []
    for index, payload in enumerate([BODY, body("[emulator:job-error]"), body(num_frames=999)]):
        job = submit_job(
            sim,
            0.0,
            payload,
            wall=0.0,
            request_id=f"r{index}",
            gateway_request_id="g",
            model_error_status=503,
        )
        plans.append(job.plan)
    assert [(p.outcome, p.model_fault) for p in plans] == [
        (Outcome.MODEL_ERROR, True),
        (Outcome.JOB_ERROR, False),
        (Outcome.INVALID_INPUT, False),
    ]
    assert plans[0].model_status == 503
    assert plans[0].output is None
    assert parse_fault_spec("") == {}


# --- the HTTP server -------------------------------------------------------------------------


async def call(fal: Harness, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
    """The response, or None when the connection was dropped (a transport error in httpx)."""
    try:
        return await fal.client.request(method, url, **kwargs)
    except httpx.TransportError:
        return None


def assert_fault_answer(kind: str, response: httpx.Response | None) -> None:
    """What a faulted call looks like to the client, for the kinds that replace the answer."""
    if kind == "reset":
        assert response is None, "a reset must be a dropped connection"
        return
    assert response is not None
    assert "x-fal-request-id" not in response.headers
    if kind == "429":
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "0.05"
        assert "detail" in response.json()
    else:
        assert response.status_code == int(kind)
        assert response.headers["content-type"].startswith("text/html")
        assert "<center>nginx</center>" in response.text
        assert f"<title>{kind} " in response.text


@pytest.mark.parametrize("kind", ["429", "502", "503", "504", "reset"])
async def test_a_faulted_submit_creates_no_job(fal: Harness, kind: str) -> None:
    fal.emulator.reconfigure(faults=faults(f"submit=1:{kind}"))
    assert_fault_answer(kind, await call(fal, "POST", "/fal-ai/lynx", json=BODY))
    stats = fal.emulator.stats(include_jobs=True)
    assert (stats["submissions"], stats["jobs"], stats["submits_created_then_lost"]) == (0, [], 0)
    assert stats["faults"]["submit"] == {"total": 1, kind: 1}
    assert stats["calls"]["submit"] == {
        "total": 1,
        ("dropped" if kind == "reset" else kind): 1,
    }
    fal.emulator.reconfigure(faults=None)
    await fal.submit()  # and the client's retry goes through
    assert fal.emulator.stats()["submissions"] == 1


async def test_reset_is_a_transport_error_in_httpx(fal: Harness) -> None:
    fal.emulator.reconfigure(faults=faults("status=1:reset"))
    with pytest.raises(httpx.TransportError):
        await fal.client.get("/fal-ai/lynx/requests/some-id/status")
    # The client's pool recovers: the next call on a fresh connection works.
    fal.emulator.reconfigure(faults=None)
    assert (await fal.client.get("/fal-ai/lynx/requests/some-id/status")).status_code == 404


async def test_lost_answer_creates_exactly_one_job_and_drops_the_connection(fal: Harness) -> None:
    fal.emulator.reconfigure(faults=faults("submit=1:lost-answer"))
    with pytest.raises(httpx.TransportError):
        await fal.client.post("/fal-ai/lynx", json=BODY)
    fal.emulator.reconfigure(faults=None)
    stats = fal.emulator.stats(include_jobs=True)
    assert (stats["submissions"], stats["submits_created_then_lost"]) == (1, 1)
    assert stats["calls"]["submit"] == {"total": 1, "dropped": 1}
    assert stats["faults"]["submit"] == {"total": 1, "lost-answer": 1}
    (job,) = stats["jobs"]
    assert job["faults"] == {"submit": {"lost-answer": 1}}
    assert job["planned_outcome"] == "succeeded"
    # The job is real: it runs and succeeds, though its submitter never heard of it.
    status_url = f"/fal-ai/lynx/requests/{job['request_id']}/status"
    assert "error" not in await fal.wait_for(status_url)
    (job,) = fal.jobs()
    assert job["outcome"] == "succeeded"


async def test_lost_answer_502_creates_exactly_one_job_and_answers_the_gateways_502(
    fal: Harness,
) -> None:
    """The variant a client cannot tell from a 502 that created nothing: the gateway's page,
    without x-fal-request-id, after the job was made."""
    fal.emulator.reconfigure(faults=faults("submit=1:lost-answer-502"))
    response = await fal.client.post("/fal-ai/lynx", json=BODY)
    fal.emulator.reconfigure(faults=None)
    assert_fault_answer("502", response)
    stats = fal.emulator.stats(include_jobs=True)
    assert (stats["submissions"], stats["submits_created_then_lost"]) == (1, 1)
    assert stats["calls"]["submit"] == {"total": 1, "502": 1}
    assert stats["faults"]["submit"] == {"total": 1, "lost-answer-502": 1}
    (job,) = stats["jobs"]
    assert job["faults"] == {"submit": {"lost-answer-502": 1}}
    final = await fal.final_status(f"/fal-ai/lynx/requests/{job['request_id']}/status")
    assert (final["status"], "error" in final) == ("COMPLETED", False)
    assert fal.job(job["request_id"])["outcome"] == "succeeded"


@pytest.mark.parametrize("kind", ["lost-answer", "lost-answer-502"])
async def test_a_lost_answer_to_a_bad_body_is_lost_too_but_makes_no_job(
    fal: Harness, kind: str
) -> None:
    fal.emulator.reconfigure(faults=faults(f"submit=1:{kind}"))
    response = await call(fal, "POST", "/fal-ai/lynx", content=b"{nope")
    if kind == "lost-answer":
        assert response is None
    else:
        assert_fault_answer("502", response)
    stats = fal.emulator.stats()
    assert (stats["submissions"], stats["submits_created_then_lost"]) == (0, 0)
    assert stats["faults"]["submit"] == {"total": 1, kind: 1}


async def test_a_slow_submit_answers_normally_after_the_delay(fal: Harness) -> None:
    fal.emulator.reconfigure(faults=faults("submit=1:slow"))
    started = time.monotonic()
    submitted = await fal.submit()
    assert time.monotonic() - started >= SLOW
    (job,) = fal.jobs()
    assert job["request_id"] == submitted["request_id"]
    assert job["faults"] == {"submit": {"slow": 1}}


async def _job_for(fal: Harness, endpoint: str) -> dict[str, Any]:
    """A job to fault calls about: completed for status and result, held running for cancel."""
    if endpoint == "cancel":
        submitted = await fal.submit(body(HOLD))
        await fal.wait_for(submitted["status_url"], "IN_PROGRESS")
    else:
        submitted = await fal.submit()
        await fal.wait_for(submitted["status_url"])
    return submitted


@pytest.mark.parametrize("kind", PER_CALL_KINDS)
@pytest.mark.parametrize("endpoint", ["status", "result", "cancel"])
async def test_faults_on_status_result_and_cancel_leave_the_job_alone(
    fal: Harness, endpoint: str, kind: str
) -> None:
    submitted = await _job_for(fal, endpoint)
    (before,) = fal.jobs()
    method, url = {
        "status": ("GET", submitted["status_url"]),
        "result": ("GET", submitted["response_url"]),
        "cancel": ("PUT", submitted["cancel_url"]),
    }[endpoint]

    fal.emulator.reconfigure(faults=faults(f"{endpoint}=1:{kind}"))
    started = time.monotonic()
    response = await call(fal, method, url)
    fal.emulator.reconfigure(faults=None)

    (after,) = fal.jobs()
    assert after["faults"] == {endpoint: {kind: 1}}
    assert fal.emulator.stats()["faults"][endpoint] == {"total": 1, kind: 1}
    if kind != "slow":
        assert_fault_answer(kind, response)
        # Untouched: not cancelled, result not counted as fetched, nothing else moved.
        assert {**after, "faults": {}} == {**before, "faults": {}}
        return
    # slow: the normal answer, late.
    assert time.monotonic() - started >= SLOW
    assert response is not None
    expected = {"status": 200, "result": 200, "cancel": 202}[endpoint]
    assert response.status_code == expected
    if endpoint == "cancel":
        assert after["outcome"] == "cancelled"
    if endpoint == "result":
        assert response.headers["x-fal-request-id"] == submitted["request_id"]
        assert after["in_flight"] is False


async def test_a_faulted_cancel_does_not_cancel_and_a_retry_does(fal: Harness) -> None:
    submitted = await _job_for(fal, "cancel")
    fal.emulator.reconfigure(faults=faults("cancel=1:503"))
    assert (await fal.client.put(submitted["cancel_url"])).status_code == 503
    assert (await fal.client.get(submitted["status_url"])).json()["status"] == "IN_PROGRESS"
    fal.emulator.reconfigure(faults=None)
    assert (await fal.client.put(submitted["cancel_url"])).status_code == 202
    (job,) = fal.jobs()
    assert (job["outcome"], job["faults"]) == ("cancelled", {"cancel": {"503": 1}})


async def test_faults_on_unknown_ids_are_counted_but_belong_to_no_job(fal: Harness) -> None:
    fal.emulator.reconfigure(faults=faults("status=1:429"))
    response = await fal.client.get("/fal-ai/lynx/requests/unknown-id/status")
    assert response.status_code == 429
    assert fal.emulator.stats(include_jobs=True)["jobs"] == []
    assert fal.emulator.stats()["faults"]["status"] == {"total": 1, "429": 1}


async def test_the_status_stream_is_faulted_like_status(fal: Harness) -> None:
    submitted = await fal.submit()
    fal.emulator.reconfigure(faults=faults("status=1:502"))
    response = await fal.client.get(submitted["status_url"] + "/stream")
    assert_fault_answer("502", response)


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("500-model", 500, "Internal Server Error"),
        ("503-model", 503, "Service Unavailable"),
    ],
)
async def test_model_faults_are_the_jobs_real_fate(
    start_emulator: StartEmulator, kind: str, status: int, message: str
) -> None:
    fal = await start_emulator(faults=faults(f"result=1:{kind}"))
    jobs = [await fal.submit() for _ in range(2)]
    invalid = await fal.submit(body(num_frames=999))
    for job in jobs:
        completed = await fal.wait_for(job["status_url"])
        assert "error" not in completed  # the app answered; fal saw no infrastructure error
        for _ in range(2):  # every fetch, not one call: this is final, not transient
            result = await fal.client.get(job["response_url"])
            assert (result.status_code, result.json()) == (status, {"detail": message})
            assert result.headers["x-fal-request-id"] == job["request_id"]
    await fal.wait_for(invalid["status_url"])
    assert (await fal.client.get(invalid["response_url"])).status_code == 422

    stats = fal.emulator.stats(include_jobs=True)
    assert stats["outcomes"]["model_error"] == 2
    assert stats["faults"]["result"] == {"total": 2, kind: 2}  # once per job, at submit
    records = {job["request_id"]: job for job in stats["jobs"]}
    for job in jobs:
        record = records[job["request_id"]]
        assert (record["outcome"], record["planned_outcome"]) == ("model_error", "model_error")
        assert record["faults"] == {"result": {kind: 1}}
    assert records[invalid["request_id"]]["outcome"] == "invalid_input"
    assert records[invalid["request_id"]]["faults"] == {}


async def test_result_503_directive(fal: Harness) -> None:
    submitted = await fal.submit(body("[emulator:result-503]"))
    await fal.wait_for(submitted["status_url"])
    result = await fal.client.get(submitted["response_url"])
    assert result.status_code == 503
    assert result.headers["x-fal-request-id"] == submitted["request_id"]
    assert fal.emulator.stats()["faults"]["result"] == {"total": 0}


async def test_the_key_can_be_fixed_while_running(start_emulator: StartEmulator) -> None:
    fal = await start_emulator(fal_key="old-key")
    async with httpx.AsyncClient(base_url=fal.base_url) as bare:
        new = {"Authorization": "Key new-key"}
        assert (await bare.post("/fal-ai/lynx", json=BODY, headers=new)).status_code == 401

        changed = await bare.post("/_emulator/config", json={"fal_key": "new-key"})
        assert changed.status_code == 200
        assert changed.json()["fal_key_set"] is True
        assert "new-key" not in changed.text
        assert (await bare.post("/fal-ai/lynx", json=BODY, headers=new)).status_code == 200
        old = {"Authorization": "Key old-key"}
        assert (await bare.post("/fal-ai/lynx", json=BODY, headers=old)).status_code == 401

        await bare.post("/_emulator/config/", json={"fal_key": None})  # any key again
        assert (await bare.post("/fal-ai/lynx", json=BODY, headers=old)).status_code == 200
        assert (await bare.get("/_emulator/config")).json()["fal_key_set"] is False

        fal.emulator.reconfigure(fal_key="python-key")
        assert (await bare.post("/fal-ai/lynx", json=BODY, headers=old)).status_code == 401
    assert fal.emulator.config.fal_key == "old-key"  # the config is as started, and frozen
    with pytest.raises(ValueError, match="fal_key"):
        fal.emulator.reconfigure(fal_key="")


async def test_faults_can_be_changed_over_http(fal: Harness) -> None:
    async with httpx.AsyncClient(base_url=fal.base_url) as bare:
        spec = {"status": {"rate": 1, "kinds": ["429"]}, "retry_after": 0.05}
        changed = await bare.post("/_emulator/config", json={"faults": spec})
        assert changed.status_code == 200
        assert changed.json()["faults"]["status"] == {"rate": 1.0, "kinds": ["429"]}
        assert (await bare.get("/_emulator/config")).json() == changed.json()
        assert fal.emulator.faults == Faults.from_json(spec)
        assert_fault_answer("429", await fal.client.get("/fal-ai/lynx/requests/x/status"))

        await bare.post("/_emulator/config", json={"faults": "status=1:503"})
        assert (await fal.client.get("/fal-ai/lynx/requests/x/status")).status_code == 503
        await bare.post("/_emulator/config", json={"faults": None})
        assert (await fal.client.get("/fal-ai/lynx/requests/x/status")).status_code == 404
        assert fal.emulator.faults == Faults()

        for bad in (
            {"faults": {"status": 2}},
            {"faults": {"status": {"rate": 1, "kinds": ["lost-answer"]}}},
            {"faults": "nonsense"},
            {"fal_key": 5},
            {"fal_key": ""},
            {"what": 1},
            [1],
        ):
            refused = await bare.post("/_emulator/config", json=bad)
            assert refused.status_code == 400, bad
            assert "detail" in refused.json()
        assert (await bare.post("/_emulator/config", content=b"{")).status_code == 400
    assert fal.emulator.faults == Faults()


async def test_random_faults_are_seeded_and_counted(start_emulator: StartEmulator) -> None:
    """status=0.5 over three kinds: what the client saw matches the counts, per job too, and
    the same seed gives the same sequence."""
    sequences = []
    for _ in range(2):
        fal = await start_emulator(seed=21)
        submitted = await fal.submit()
        await fal.wait_for(submitted["status_url"])
        fal.emulator.reconfigure(faults=faults("status=0.5:429+503+reset"))
        seen: list[str] = []
        for _ in range(40):
            response = await call(fal, "GET", submitted["status_url"])
            seen.append("reset" if response is None else str(response.status_code))
        sequences.append(seen)
        stats = fal.emulator.stats(include_jobs=True)
        injected: dict[str, int] = {
            kind: seen.count(kind) for kind in ("429", "503", "reset") if kind in seen
        }
        assert stats["faults"]["status"] == {"total": 40 - seen.count("200"), **injected}
        (job,) = stats["jobs"]
        assert job["faults"] == {"status": injected}
        assert 0 < seen.count("200") < 40
    assert sequences[0] == sequences[1]


async def test_faults_do_not_shift_the_simulations_draws(start_emulator: StartEmulator) -> None:
    """Fault draws have their own RNG: the n-th job runs as long with faults as without."""
    run_times = []
    for spec in ("", "submit=0.5:429+503,status=0.3:429,result=0.5:503-model"):
        fal = await start_emulator(seed=5, run_time=(0.01, 0.05), faults=faults(spec))
        submitted: list[dict[str, Any]] = []
        while len(submitted) < 4:  # a client retrying faulted submits (they create no job)
            response = await fal.client.post("/fal-ai/lynx", json=BODY)
            if response.status_code == 200:
                submitted.append(response.json())
        completed = [await fal.wait_for(job["status_url"]) for job in submitted]
        run_times.append([status["metrics"]["inference_time"] for status in completed])
    assert run_times[0] == pytest.approx(run_times[1])
