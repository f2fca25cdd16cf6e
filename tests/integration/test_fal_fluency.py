"""fal's failure modes on real Kafka with the emulator: injected faults, a refused key,
cancels and deadlines. Each request must end with exactly one event, and the right one."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fal_emulator.config import EmulatorConfig
from fal_emulator.faults import Faults
from tests.conftest import free_port
from tests.integration.conftest import (
    Topics,
    committed_and_end,
    consume,
    consume_all,
    emulator_running,
    events,
    produce,
    relay_running,
    relay_settings,
    request,
)

pytestmark = pytest.mark.kafka


def jobs_by_prompt(stats: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    jobs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job in stats["jobs"]:
        jobs[job["input"]["prompt"]].append(job)
    return jobs


async def test_twenty_percent_faults_everywhere_still_one_right_event_each(
    topics: Topics,
) -> None:
    """429s with Retry-After, gateway 5xx, resets, slow answers and lost submit answers on 20 %
    of the calls of every endpoint, plus model errors: 100 requests, one event each, matching
    what really happened at fal, and no request submitted twice. A submit whose answer was lost
    is settled with fal's request history: its job is adopted, or, never created (a reset or a
    5xx before fal had it), it is submitted again once the history surely would list it."""
    faults = Faults.parse(
        "submit=0.2:429+503+reset+slow+lost-answer,"
        "status=0.2:429+502+503+reset+slow,"
        "result=0.2:429+503+reset+503-model",
        retry_after=0.02,
        slow=(0.05, 0.2),
    )
    config = EmulatorConfig(run_time=(0.05, 0.3), seed=21, faults=faults)
    async with emulator_running(config) as fal:
        settings = relay_settings(
            topics, fal.base_url, RELAY_MAX_IN_FLIGHT="16", RELAY_RECONCILE_GIVE_UP_S="2"
        )
        async with relay_running(settings):
            await produce(
                topics.bootstrap,
                topics.requests,
                [request(f"f-{i}", f"faulty {i}") for i in range(100)],
            )
            got = events(await consume(topics.bootstrap, topics.results, 100, within=180))
        stats = fal.stats(include_jobs=True)
    assert sorted(got) == sorted(f"f-{i}" for i in range(100))
    assert len(await consume_all(topics.bootstrap, topics.results)) == 100
    jobs = jobs_by_prompt(stats)
    assert all(len(js) == 1 for js in jobs.values()), "a request was submitted twice"
    seen: defaultdict[str, int] = defaultdict(int)
    for i in range(100):
        event = got[f"f-{i}"]
        (job,) = jobs[f"faulty {i}"]  # every request got its one job, lost answers too
        code = event["error"]["code"] if event["error"] else None
        if job["outcome"] == "succeeded":
            assert event["status"] == "succeeded", (event, job)
            assert event["fal_request_id"] == job["request_id"]
        else:
            assert job["outcome"] in ("model_error", "job_error"), job
            assert (event["status"], code) == ("failed", "fal_failed"), (event, job)
        seen[event["status"] if code is None else code] += 1
    assert seen["succeeded"] >= 50  # the faults are frequent, not overwhelming
    assert stats["submits_created_then_lost"] > 0  # and some of them were lost answers
    assert sum(stats["faults"][endpoint]["total"] for endpoint in ("status", "result")) > 20
    committed, ends = await committed_and_end(topics)
    assert committed == ends


async def test_a_refused_key_pauses_the_relay_until_fal_accepts_it(topics: Topics) -> None:
    """Requests wait (no failed events), /readyz turns red, and everything completes once the
    key works again."""
    async with emulator_running(EmulatorConfig(fal_key="new-key", run_time=(0.05, 0.05))) as fal:
        settings = relay_settings(topics, fal.base_url, FAL_KEY="old-key")
        async with relay_running(settings) as relay:
            await produce(topics.bootstrap, topics.requests, [request(f"k-{i}") for i in range(5)])
            ready = f"http://127.0.0.1:{relay.ops_port}/readyz"
            async with httpx.AsyncClient() as http:
                async with asyncio.timeout(30):
                    while (await http.get(ready)).status_code != 503:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)  # readiness is only seen by asking
                refused = relay.metrics.registry.get_sample_value("lynx_relay_fal_key_refused")
                fal.reconfigure(fal_key="old-key")  # the account accepts the key again
                got = events(await consume(topics.bootstrap, topics.results, 5, within=90))
                after = (await http.get(ready)).status_code
    assert refused == 1
    assert {e["status"] for e in got.values()} == {"succeeded"}
    assert after == 200
    assert "old-key" not in json.dumps(got)


def cancel(rid: str) -> bytes:
    return json.dumps({"request_id": rid, "action": "cancel"}).encode()


async def test_cancel_before_submit_while_queued_and_while_running(topics: Topics) -> None:
    """One cancelled event each; fal gets a cancel call for the queued and the running job,
    and never sees the request cancelled before it was submitted."""
    config = EmulatorConfig(run_time=(30.0, 30.0), max_concurrent=1)
    async with emulator_running(config) as fal:
        async with relay_running(relay_settings(topics, fal.base_url)):
            await produce(
                topics.bootstrap, topics.requests, [cancel("never"), request("never")], partition=0
            )
            await produce(topics.bootstrap, topics.requests, [request("running")], partition=1)
            async with asyncio.timeout(30):
                while fal.stats()["running"] < 1:  # noqa: ASYNC110 - the emulator's own count
                    await asyncio.sleep(0.02)
            await produce(topics.bootstrap, topics.requests, [request("queued")], partition=2)
            async with asyncio.timeout(30):
                while fal.stats()["queued"] < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            await produce(topics.bootstrap, topics.requests, [cancel("running")], partition=1)
            await produce(topics.bootstrap, topics.requests, [cancel("queued")], partition=2)
            got = events(await consume(topics.bootstrap, topics.results, 3, within=60))
        stats = fal.stats(include_jobs=True)
    assert {rid: (e["status"], e["error"]["code"]) for rid, e in got.items()} == {
        "never": ("cancelled", "cancelled"),
        "running": ("cancelled", "cancelled"),
        "queued": ("cancelled", "cancelled"),
    }
    prompts = [job["input"]["prompt"] for job in stats["jobs"]]
    assert len(prompts) == 2  # "never" was never submitted
    assert stats["calls"]["cancel"]["total"] == 2
    committed, ends = await committed_and_end(topics)
    assert committed == ends


async def test_deadlines(topics: Topics) -> None:
    """Past its deadline a request is not submitted; a job still running at its deadline is
    cancelled at fal. Both fail with timeout."""
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    async with emulator_running(EmulatorConfig(run_time=(60.0, 60.0))) as fal:
        async with relay_running(relay_settings(topics, fal.base_url)):
            await produce(
                topics.bootstrap,
                topics.requests,
                [
                    request("too-late", options={"deadline": past}),
                    request("runs-out", options={"deadline": soon}),
                ],
            )
            got = events(await consume(topics.bootstrap, topics.results, 2, within=60))
        stats = fal.stats()
    assert (got["too-late"]["status"], got["too-late"]["error"]["code"]) == ("failed", "timeout")
    assert got["too-late"]["fal_request_id"] is None
    assert (got["runs-out"]["status"], got["runs-out"]["error"]["code"]) == ("failed", "timeout")
    assert "deadline" in got["runs-out"]["error"]["message"]
    assert stats["submissions"] == 1
    assert stats["calls"]["cancel"]["total"] == 1


WATCH_CASES = [
    request("w-ok-1"),
    request("w-ok-2", "slow one [emulator:run=0.6]"),
    request("w-error", "a pumpkin [emulator:job-error]"),
    request("w-422", input={"image_url": "https://cdn.example.invalid/f.png", "prompt": "p"}),
    request("w-500", "a pumpkin [emulator:result-500]"),
]
EXPECTED = {
    "w-ok-1": ("succeeded", None),
    "w-ok-2": ("succeeded", None),
    "w-error": ("failed", "fal_failed"),
    "w-422": ("failed", "fal_rejected"),
    "w-500": ("failed", "fal_failed"),
}


@pytest.mark.parametrize("mode", ["poll", "stream", "webhook"])
async def test_every_watch_mode_gives_the_same_results(topics: Topics, mode: str) -> None:
    """The same requests end the same way whichever way jobs are watched; in webhook mode
    half the webhooks are lost and the safety-net poll finds those jobs, and an unsigned call
    to the webhook endpoint is refused."""
    config = EmulatorConfig(
        run_time=(0.05, 0.2), seed=5, webhook_drop_rate=0.5, webhook_retry_delays=(0.05,)
    )
    port = free_port()
    async with emulator_running(config) as fal:
        extra = {"RELAY_WATCH_MODE": mode}
        if mode == "webhook":
            extra |= {
                "RELAY_HTTP_PORT": str(port),
                "RELAY_WEBHOOK_URL": f"http://127.0.0.1:{port}/fal/webhook",
                "FAL_JWKS_URL": f"{fal.base_url}/_emulator/jwks.json",
                "RELAY_WEBHOOK_SAFETY_POLL_S": "0.5",
            }
        async with relay_running(relay_settings(topics, fal.base_url, **extra)) as relay:
            await produce(topics.bootstrap, topics.requests, WATCH_CASES)
            got = events(await consume(topics.bootstrap, topics.results, 5, within=60))
            registry = relay.metrics.registry
            polls = registry.get_sample_value(
                "lynx_relay_fal_http_requests_total", {"endpoint": "status", "status_class": "2xx"}
            )
            streams = registry.get_sample_value(
                "lynx_relay_fal_http_requests_total", {"endpoint": "stream", "status_class": "2xx"}
            )
            unsigned = None
            if mode == "webhook":
                async with httpx.AsyncClient() as http:
                    unsigned = await http.post(
                        f"http://127.0.0.1:{relay.ops_port}/fal/webhook",
                        json={"request_id": "x", "status": "OK", "payload": {}},
                    )
        stats = fal.stats()
    outcome = {
        rid: (e["status"], e["error"]["code"] if e["error"] else None) for rid, e in got.items()
    }
    assert outcome == EXPECTED
    assert stats["submissions"] == 5
    if mode == "stream":
        assert (polls, streams) == (0, 5)  # one stream per job, no polling at all
    if mode == "webhook":
        assert unsigned is not None
        assert unsigned.status_code == 401
        assert stats["webhooks"]["delivered"] >= 1
        assert stats["webhooks"]["dropped"] >= 1  # and the safety net found those jobs


async def test_progress_events_reach_their_topic(topics: Topics) -> None:
    """With RELAY_PROGRESS_TOPIC set: queued (with a position), started, and fal's log lines,
    keyed by request_id, bounded by RELAY_PROGRESS_MAX_LOGS."""
    progress_topic = f"{topics.requests}-progress"
    config = EmulatorConfig(run_time=(1.0, 1.0), max_concurrent=1)
    async with emulator_running(config) as fal:
        settings = relay_settings(
            topics,
            fal.base_url,
            RELAY_PROGRESS_TOPIC=progress_topic,
            RELAY_PROGRESS_MIN_INTERVAL_S="0.1",
            RELAY_PROGRESS_MAX_LOGS="3",
            # The relay creates the progress topic (RELAY_CREATE_TOPICS): with 2 partitions.
            RELAY_TOPICS_PARTITIONS="2",
        )
        async with relay_running(settings):
            await produce(
                topics.bootstrap, topics.requests, [request("p-1"), request("p-2")], partition=0
            )
            await consume(topics.bootstrap, topics.results, 2, within=60)
    records = await consume_all(topics.bootstrap, progress_topic, partitions=2)
    by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        body = json.loads(record.value)
        assert record.key == body["request_id"].encode()
        by_request[body["request_id"]].append(body)
    for rid in ("p-1", "p-2"):
        kinds = [e["event"] for e in by_request[rid]]
        assert kinds.count("started") == 1
        assert 1 <= kinds.count("log") <= 3
    assert any(
        e["event"] == "queued" and e["queue_position"] is not None for e in by_request["p-2"]
    )  # it waited behind p-1


async def test_a_job_fal_could_not_start_in_time_fails_with_timeout(topics: Topics) -> None:
    """options.start_timeout_s becomes fal's start deadline; a job still queued at it ends
    at fal, and the request fails with timeout (not retryable: the requester set it)."""
    config = EmulatorConfig(run_time=(20.0, 20.0), max_concurrent=1)
    async with emulator_running(config) as fal:
        async with relay_running(relay_settings(topics, fal.base_url)):
            await produce(topics.bootstrap, topics.requests, [request("hog")], partition=0)
            async with asyncio.timeout(30):
                while fal.stats()["running"] < 1:  # noqa: ASYNC110 - the emulator's own count
                    await asyncio.sleep(0.02)
            await produce(
                topics.bootstrap,
                topics.requests,
                [request("impatient", options={"start_timeout_s": 1.5})],
                partition=1,
            )
            got = events(await consume(topics.bootstrap, topics.results, 1, within=30))
    error = got["impatient"]["error"]
    assert (got["impatient"]["status"], error["code"], error["retryable"]) == (
        "failed",
        "timeout",
        False,
    )
    assert error["details"]["status_code"] == 504
