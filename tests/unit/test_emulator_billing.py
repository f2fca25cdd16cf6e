"""What the emulator bills, as fal bills Lynx: per second of output video.

A job that succeeded is billed ``num_frames / frames_per_second`` of its input, once, when it
ends; its result answer carries ``X-Fal-Billable-Units`` on every fetch. A refused input is billed
``bill_user_errors`` (0 by default); server errors, start timeouts and cancels never are, and their
answers carry no header. The bill is in the stats; the unit price is served by the Platform API's
``GET /v1/models/pricing`` and changes at runtime.

The rule itself is checked as a table on ``billable_units``; the rest on a real ``FalEmulator``
over HTTP, whose jobs finish in 0.01-0.03 s and are awaited through their status stream (or held
running with ``[emulator:run=30]``); nothing waits on a sleep.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from fal_emulator import EmulatorConfig, Faults, config_from_arguments
from fal_emulator.jobs import Outcome, Plan, billable_units
from fal_emulator.wire import format_units
from tests.unit.emulator_support import (
    AUTH,
    HOLD,
    Harness,
    Receiver,
    StartEmulator,
    body,
    emulator_fixtures,
    emulator_parser,
    receiver_fixtures,
)

start_emulator, fal = emulator_fixtures(seed=11)
start_receiver, receiver = receiver_fixtures()

HEADER = "X-Fal-Billable-Units"
PRICING = "/v1/models/pricing"
# fal's defaults, 81 frames at 16 fps: 5.0625 seconds of video (exact in binary, so sums are too).
DEFAULT_UNITS = 5.0625


async def finished(fal: Harness, payload: dict[str, Any]) -> dict[str, Any]:
    """Submit ``payload`` and wait until its job completed; returns the submit's answer."""
    submitted = await fal.submit(payload)
    await fal.completed(submitted)
    return submitted


def billing(fal: Harness) -> dict[str, Any]:
    bill: dict[str, Any] = fal.emulator.stats()["billing"]
    return bill


def assert_platform_error(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "docs_url", "request_id"}
    assert error["type"] == error_type
    assert error["message"]
    assert error["docs_url"] == "https://docs.fal.ai/platform-apis/v1/models/pricing"
    uuid.UUID(error["request_id"])


# --- the rule, as a table --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "units"),
    [
        (Outcome.SUCCEEDED, 1.375),  # the plan's video: 33 frames at 24 fps
        (Outcome.INVALID_INPUT, 2.5),  # bill_user_errors
        (Outcome.JOB_ERROR, 0.0),
        (Outcome.MODEL_ERROR, 0.0),
        (Outcome.START_TIMEOUT, 0.0),
        (Outcome.CANCELLED, 0.0),
    ],
)
def test_only_successes_and_billed_user_errors_cost_units(outcome: Outcome, units: float) -> None:
    plan = Plan(outcome, run_time=1.0, queue_wait=0.0, num_frames=33, video_seconds=33 / 24)
    assert billable_units(outcome, plan, user_error_units=2.5) == units


@pytest.mark.parametrize(
    ("units", "text"),
    [(5.0625, "5.0625"), (1.375, "1.375"), (2.7, "2.7"), (1e-05, "0.00001"), (3.0, "3.0")],
)
def test_units_are_written_as_plain_decimals(units: float, text: str) -> None:
    """No exponent, and the text reads back as the same float."""
    assert format_units(units) == text
    assert float(text) == units


# --- the header on the result answer -----------------------------------------------------------


async def test_a_success_carries_its_seconds_of_video_on_every_fetch(fal: Harness) -> None:
    """81 frames at 16 fps (fal's defaults) are 5.0625 units, on each fetch of the result; the
    job is billed once."""
    submitted = await finished(fal, body())
    for _ in range(2):
        result = await fal.client.get(submitted["response_url"])
        assert result.status_code == 200
        assert result.headers[HEADER] == "5.0625"
    status = await fal.client.get(submitted["status_url"])
    assert HEADER not in status.headers  # the status is not the bill
    assert billing(fal) == {
        "unit": "second",
        "unit_price": 0.6,
        "currency": "USD",
        "units_total": DEFAULT_UNITS,
        "amount_total": pytest.approx(DEFAULT_UNITS * 0.6),
        "jobs_billed": 1,
    }
    job = fal.job(submitted["request_id"])
    assert job["billed_units"] == DEFAULT_UNITS
    assert job["billed_amount"] == pytest.approx(3.0375)


async def test_the_units_are_the_inputs_frames_over_its_frame_rate(fal: Harness) -> None:
    """33 frames at 24 fps are 1.375 seconds; the output's duration says the same."""
    submitted = await finished(fal, body(num_frames=33, frames_per_second=24))
    result = await fal.client.get(submitted["response_url"])
    assert result.headers[HEADER] == "1.375"
    assert result.json()["video"]["duration"] == 1.375


async def test_a_cancelled_job_is_not_billed(fal: Harness) -> None:
    submitted = await fal.submit(body(HOLD))
    await fal.wait_for(submitted["status_url"], "IN_PROGRESS")
    assert (await fal.client.put(submitted["cancel_url"])).status_code == 202
    result = await fal.client.get(submitted["response_url"])
    assert result.status_code == 400
    assert HEADER not in result.headers
    assert fal.job(submitted["request_id"])["billed_units"] == 0.0
    assert billing(fal)["jobs_billed"] == 0


@pytest.mark.parametrize(
    ("prompt", "spec", "status"),
    [
        ("", "result=1:503-model", 503),  # the injected model fate
        ("[emulator:result-500]", None, 500),
        ("[emulator:job-error]", None, 503),  # runner_disconnected
    ],
)
async def test_server_errors_are_never_billed(
    fal: Harness, prompt: str, spec: str | None, status: int
) -> None:
    if spec is not None:
        fal.emulator.reconfigure(faults=Faults.parse(spec))  # a model fate is drawn at submit
    submitted = await fal.submit(body(prompt))
    fal.emulator.reconfigure(faults=None)
    await fal.completed(submitted)
    result = await fal.client.get(submitted["response_url"])
    assert result.status_code == status
    assert result.headers["x-fal-request-id"] == submitted["request_id"]
    assert HEADER not in result.headers
    assert billing(fal)["units_total"] == 0.0


async def test_a_start_timeout_is_not_billed(start_emulator: StartEmulator) -> None:
    """The job never started (one slot, held by another): queue time is not billed."""
    fal = await start_emulator(max_concurrent=1)
    await fal.submit(body(HOLD))
    timed_out = await fal.submit(body(), headers={"X-Fal-Request-Start-Timeout": "0.02"})
    await fal.completed(timed_out)
    result = await fal.client.get(timed_out["response_url"])
    assert result.status_code == 504
    assert HEADER not in result.headers
    assert billing(fal)["jobs_billed"] == 0


async def test_a_gateway_fault_carries_no_bill_and_the_job_keeps_its_own(fal: Harness) -> None:
    submitted = await finished(fal, body())
    fal.emulator.reconfigure(faults=Faults.parse("result=1:502"))
    faulted = await fal.client.get(submitted["response_url"])
    fal.emulator.reconfigure(faults=None)
    assert faulted.status_code == 502
    assert HEADER not in faulted.headers
    result = await fal.client.get(submitted["response_url"])
    assert result.headers[HEADER] == "5.0625"
    assert billing(fal)["jobs_billed"] == 1


async def test_a_refused_input_is_not_billed_by_default(fal: Harness) -> None:
    submitted = await finished(fal, body(num_frames=100))  # the schema's range is 9-81
    result = await fal.client.get(submitted["response_url"])
    assert result.status_code == 422
    assert HEADER not in result.headers
    assert billing(fal)["jobs_billed"] == 0


async def test_a_refused_input_is_billed_when_configured(start_emulator: StartEmulator) -> None:
    fal = await start_emulator(bill_user_errors=0.5)
    refused = await finished(fal, body(num_frames=100))
    result = await fal.client.get(refused["response_url"])
    assert result.status_code == 422
    assert result.headers[HEADER] == "0.5"
    bill = billing(fal)
    assert (bill["units_total"], bill["jobs_billed"]) == (0.5, 1)
    assert bill["amount_total"] == pytest.approx(0.3)
    assert fal.job(refused["request_id"])["billed_units"] == 0.5


async def test_the_webhook_body_has_no_billing_field(fal: Harness, receiver: Receiver) -> None:
    """fal's webhook carries no billing that we know of, so the emulator invents none."""
    submitted = await fal.submit(body(), webhook=receiver.url)
    (delivered,) = await receiver.wait_for(1)
    assert set(delivered.json) == {"request_id", "gateway_request_id", "status", "payload"}
    assert delivered.json["request_id"] == submitted["request_id"]
    assert not any(name.lower() == HEADER.lower() for name in delivered.headers)


# --- the bill in the stats ---------------------------------------------------------------------


async def test_the_bill_is_the_sum_of_the_headers(start_emulator: StartEmulator) -> None:
    """Every job billed when it ended, fetched or not: the stats equal the headers seen, job for
    job, and a result fetched twice still counts once."""
    fal = await start_emulator(bill_user_errors=0.25, queue_wait=(0.01, 0.02))
    payloads = [
        body(),
        body(num_frames=33, frames_per_second=24),
        body(num_frames=9, frames_per_second=8),
        body(num_frames=100),  # refused: 0.25
        body("[emulator:result-503]"),  # a server error: nothing
    ]
    jobs = [await finished(fal, payload) for payload in payloads]
    cancelled = await fal.submit(body(HOLD))
    await fal.client.put(cancelled["cancel_url"])
    seen: dict[str, float] = {}
    for job in [*jobs, cancelled, jobs[0]]:
        result = await fal.client.get(job["response_url"])
        if HEADER in result.headers:
            seen[job["request_id"]] = float(result.headers[HEADER])
    assert sorted(seen.values()) == [0.25, 1.125, 1.375, 5.0625]
    unfetched = await finished(fal, body(num_frames=17, frames_per_second=8))  # 2.125, unseen

    stats = await fal.stats(jobs=1)
    bill = stats["billing"]
    assert bill["units_total"] == sum(seen.values()) + 2.125
    assert bill["jobs_billed"] == len(seen) + 1
    assert bill["amount_total"] == pytest.approx(bill["units_total"] * 0.6)
    billed = {job["request_id"]: job["billed_units"] for job in stats["jobs"]}
    assert billed == {
        **{job["request_id"]: seen.get(job["request_id"], 0.0) for job in [*jobs, cancelled]},
        unfetched["request_id"]: 2.125,
    }


# --- the pricing endpoint ----------------------------------------------------------------------


async def test_pricing_answers_the_unit_price_per_endpoint(fal: Harness) -> None:
    response = await fal.client.get(PRICING, params={"endpoint_id": "bytedance/lynx"})
    assert response.status_code == 200
    assert response.json() == {
        "prices": [
            {
                "endpoint_id": "bytedance/lynx",
                "unit_price": 0.6,
                "unit": "second",
                "currency": "USD",
            }
        ],
        "next_cursor": None,
        "has_more": False,
    }
    async with httpx.AsyncClient(base_url=fal.emulator.api_url, headers=AUTH) as api:
        under_api_url = await api.get("/models/pricing", params={"endpoint_id": "fal-ai/lynx"})
    assert under_api_url.json()["prices"][0]["endpoint_id"] == "fal-ai/lynx"
    assert fal.emulator.stats()["calls"]["pricing"] == {"total": 2, "200": 2}


@pytest.mark.parametrize(
    "query",
    [
        "endpoint_id=fal-ai/lynx&endpoint_id=bytedance/lynx",
        "endpoint_id=fal-ai/lynx,bytedance/lynx",
        "endpoint_id=fal-ai/lynx&endpoint_id=bytedance/lynx,fal-ai/lynx",
    ],
)
async def test_several_endpoints_get_one_price_each(fal: Harness, query: str) -> None:
    """Repeated or comma-separated, as fal's documentation allows; a repeated id once."""
    response = await fal.client.get(f"{PRICING}?{query}")
    assert response.status_code == 200
    prices = response.json()["prices"]
    assert [price["endpoint_id"] for price in prices] == ["fal-ai/lynx", "bytedance/lynx"]
    assert {price["unit_price"] for price in prices} == {0.6}


async def test_pricing_errors_have_the_platform_apis_shape(fal: Harness) -> None:
    async with httpx.AsyncClient(base_url=fal.base_url) as bare:
        no_key = await bare.get(PRICING, params={"endpoint_id": "bytedance/lynx"})
        assert_platform_error(no_key, 401, "authorization_error")
        wrong = await bare.get(
            PRICING, params={"endpoint_id": "bytedance/lynx"}, headers={"Authorization": "Key no"}
        )
        assert_platform_error(wrong, 401, "authorization_error")
    missing = await fal.client.get(PRICING)
    assert_platform_error(missing, 422, "validation_error")
    assert "endpoint_id" in missing.json()["error"]["message"]
    assert_platform_error(
        await fal.client.get(PRICING, params={"endpoint_id": " , "}), 422, "validation_error"
    )
    too_many = ",".join(["bytedance/lynx"] * 51)
    assert_platform_error(
        await fal.client.get(PRICING, params={"endpoint_id": too_many}), 422, "validation_error"
    )
    assert_platform_error(
        await fal.client.get(PRICING, params={"endpoint_id": "lynx"}), 422, "validation_error"
    )
    unknown = await fal.client.get(PRICING, params={"endpoint_id": "fal-ai/flux/dev"})
    assert_platform_error(unknown, 404, "not_found")
    assert fal.emulator.stats()["calls"]["pricing"] == {
        "total": 7,
        "401": 2,
        "422": 4,
        "404": 1,
    }


async def test_the_price_changes_at_runtime_and_bills_from_then_on(fal: Harness) -> None:
    """POST /_emulator/config and reconfigure change what pricing answers; a job is charged the
    price in force when it ended, so a change never re-prices a job already billed."""
    await finished(fal, body())  # billed at 0.60
    async with httpx.AsyncClient(base_url=fal.base_url) as bare:
        assert (await bare.get("/_emulator/config")).json()["unit_price"] == 0.6
        changed = await bare.post("/_emulator/config", json={"unit_price": 0.75})
        assert changed.status_code == 200
        assert changed.json()["unit_price"] == 0.75
        # inf goes out as JSON's Infinity, which the server's json reads back: it must refuse it.
        for bad in (-1, "0.7", None, True, float("inf")):
            refused = await bare.post("/_emulator/config", content=json.dumps({"unit_price": bad}))
            assert refused.status_code == 400, bad
    priced = await fal.client.get(PRICING, params={"endpoint_id": "bytedance/lynx"})
    assert priced.json()["prices"][0]["unit_price"] == 0.75
    second = await finished(fal, body())  # billed at 0.75

    bill = billing(fal)
    assert bill["unit_price"] == 0.75
    assert bill["units_total"] == 2 * DEFAULT_UNITS
    assert bill["amount_total"] == pytest.approx(DEFAULT_UNITS * 0.6 + DEFAULT_UNITS * 0.75)
    assert fal.job(second["request_id"])["billed_amount"] == pytest.approx(DEFAULT_UNITS * 0.75)

    fal.emulator.reconfigure(unit_price=0)  # a free endpoint is still priced, at 0
    assert fal.emulator.unit_price == 0.0
    priced = await fal.client.get(PRICING, params={"endpoint_id": "bytedance/lynx"})
    assert priced.json()["prices"][0]["unit_price"] == 0.0
    with pytest.raises(ValueError, match="unit_price"):
        fal.emulator.reconfigure(unit_price=-0.1)
    assert fal.emulator.config.unit_price == 0.6  # the config is as started


# --- settings ----------------------------------------------------------------------------------


def test_the_billing_options() -> None:
    parser = emulator_parser()
    config = config_from_arguments(
        parser.parse_args(["--unit-price", "0.45", "--bill-user-errors-units", "1.5"])
    )
    assert (config.unit_price, config.bill_user_errors) == (0.45, 1.5)
    defaults = config_from_arguments(parser.parse_args([]))
    assert (defaults.unit_price, defaults.bill_user_errors) == (0.6, 0.0)
    help_text = parser.format_help()
    for words in ("--unit-price", "--bill-user-errors-units", "X-Fal-Billable-Units", "pricing"):
        assert words in help_text


@pytest.mark.parametrize(
    "argv", [["--unit-price", "-1"], ["--unit-price", "nan"], ["--bill-user-errors-units", "x"]]
)
def test_bad_billing_options_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        emulator_parser().parse_args(argv)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"unit_price": -0.01}, "unit_price"),
        ({"unit_price": float("nan")}, "unit_price"),
        ({"bill_user_errors": -1.0}, "bill_user_errors"),
        ({"bill_user_errors": float("inf")}, "bill_user_errors"),
    ],
)
def test_the_config_refuses_bad_billing(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EmulatorConfig(**settings)
