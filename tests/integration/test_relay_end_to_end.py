"""The first slice end to end: real Kafka, the fal queue emulator, the relay's composition root.

Each test has its own topics, group and emulator; the session shares one broker.
"""

from __future__ import annotations

import json
import re

import httpx

from fal_emulator.config import EmulatorConfig
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


async def test_fifty_requests_fifty_videos_and_offsets_at_the_log_end(topics: Topics) -> None:
    """50 valid requests with fast and slow jobs give exactly 50 succeeded events with the
    right ids, videos and echoed metadata; every offset is committed."""
    config = EmulatorConfig(run_time=(0.01, 0.4), queue_wait=(0.0, 0.1), seed=7)
    async with emulator_running(config) as fal:
        settings = relay_settings(topics, fal.base_url, RELAY_MAX_IN_FLIGHT="8")
        async with relay_running(settings):
            await produce(
                topics.bootstrap, topics.requests, [request(f"req-{i}") for i in range(50)]
            )
            got = events(await consume(topics.bootstrap, topics.results, 50))
        stats = fal.stats()
    assert sorted(got) == sorted(f"req-{i}" for i in range(50))
    for rid, event in got.items():
        assert event["status"] == "succeeded"
        assert event["error"] is None
        assert event["video"]["url"].startswith(fal.base_url)
        assert event["video"]["content_type"] == "video/mp4"
        assert isinstance(event["seed"], int)
        assert event["metadata"] == {"tenant": "acme", "n": rid}
        assert event["fal_request_id"]
        timings = event["timings"]
        assert timings["received_at"] <= timings["submitted_at"] <= timings["completed_at"]
    assert stats["submissions"] == 50
    assert stats["peak_in_flight"] <= 8
    committed, ends = await committed_and_end(topics)
    assert committed == ends
    assert sum(ends.values()) == 50
    assert len(await consume_all(topics.bootstrap, topics.results)) == 50


async def test_in_flight_never_exceeds_the_limit(topics: Topics) -> None:
    """With RELAY_MAX_IN_FLIGHT=3 and 200 requests, fal never sees more than 3 jobs of ours
    between submit and result; and the relay does use all 3."""
    config = EmulatorConfig(run_time=(0.01, 0.05), seed=3)
    async with emulator_running(config) as fal:
        settings = relay_settings(topics, fal.base_url, RELAY_MAX_IN_FLIGHT="3")
        async with relay_running(settings) as relay:
            await produce(topics.bootstrap, topics.requests, [request(f"r{i}") for i in range(200)])
            got = events(await consume(topics.bootstrap, topics.results, 200, within=120))
            port = relay.ops_port
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        stats = fal.stats()
    assert len(got) == 200
    assert {e["status"] for e in got.values()} == {"succeeded"}
    assert stats["submissions"] == 200
    assert stats["peak_in_flight"] == 3
    assert "lynx_relay_max_in_flight 3.0" in metrics
    assert "lynx_relay_fal_submissions_total 200.0" in metrics
    committed, ends = await committed_and_end(topics)
    assert committed == ends


async def test_bad_messages_are_dead_lettered_and_the_partition_keeps_flowing(
    topics: Topics,
) -> None:
    """Each bad message is copied untouched (key, value, headers) to the dead-letter topic
    with reason headers; those with a readable request_id also get a failed event with the
    field errors; the valid messages behind them in the same partition still succeed."""
    bad = [
        b"this is not json",
        b"[1, 2, 3]",
        json.dumps({"request_id": "no-image", "input": {"prompt": "p"}}).encode(),
        request(
            "too-many-frames",
            input={"image_url": "https://e.com/a.png", "prompt": "p", "num_frames": 500},
        ),
        request(
            "4k", input={"image_url": "https://e.com/a.png", "prompt": "p", "resolution": "4k"}
        ),
        request(
            "unknown-field",
            input={"image_url": "https://e.com/a.png", "prompt": "p", "sharpness": 11},
        ),
    ]
    good = [request(f"good-{i}") for i in range(3)]
    async with emulator_running(EmulatorConfig(run_time=(0.01, 0.02))) as fal:
        async with relay_running(relay_settings(topics, fal.base_url)):
            await produce(topics.bootstrap, topics.requests, bad + good, partition=0)
            got = events(await consume(topics.bootstrap, topics.results, 7))
            dead = await consume(topics.bootstrap, topics.dead_letters, 6)
        submissions = fal.stats()["submissions"]
    assert [r.value for r in dead] == bad  # original bytes, original order
    codes = [dict(r.headers)["x-relay-error-code"] for r in dead]
    assert codes == [b"not_json", b"not_object", b"schema", b"schema", b"schema", b"schema"]
    for offset, record in enumerate(dead):
        headers = dict(record.headers)
        assert headers["x-relay-source-topic"] == topics.requests.encode()
        assert headers["x-relay-source-partition"] == b"0"
        assert headers["x-relay-source-offset"] == str(offset).encode()
        assert headers["x-relay-error-message"]
    assert dead[2].key == b"no-image"
    fields = {
        rid: [d["field"] for d in got[rid]["error"]["details"]]
        for rid in ("no-image", "too-many-frames", "4k", "unknown-field")
    }
    assert fields == {
        "no-image": ["input.image_url"],
        "too-many-frames": ["input.num_frames"],
        "4k": ["input.resolution"],
        "unknown-field": ["input.sharpness"],
    }
    for rid in fields:
        assert got[rid]["status"] == "failed"
        assert got[rid]["error"]["code"] == "invalid_request"
        assert got[rid]["error"]["retryable"] is False
    assert [got[f"good-{i}"]["status"] for i in range(3)] == ["succeeded"] * 3
    assert submissions == 3
    committed, ends = await committed_and_end(topics)
    assert committed == ends == {0: 9}


async def test_fal_failures_become_failed_events_with_codes_and_fals_details(
    topics: Topics,
) -> None:
    """A job that fails while running, input fal refuses (422), and a 500 on the result each
    end in exactly one failed event with the contract's code and fal's own message."""
    cases = [
        request("job-error", "a pumpkin [emulator:job-error]"),
        request(
            "rejected",
            input={"image_url": "https://cdn.example.invalid/face.png", "prompt": "a pumpkin"},
        ),
        request("result-500", "a pumpkin [emulator:result-500]"),
        request("fine"),
    ]
    async with emulator_running(EmulatorConfig(run_time=(0.01, 0.05))) as fal:
        async with relay_running(relay_settings(topics, fal.base_url)):
            await produce(topics.bootstrap, topics.requests, cases)
            got = events(await consume(topics.bootstrap, topics.results, 4))
    assert got["fine"]["status"] == "succeeded"
    job_error = got["job-error"]["error"]
    assert (got["job-error"]["status"], job_error["code"]) == ("failed", "fal_failed")
    assert job_error["details"]["error_type"] == "runner_disconnected"
    assert job_error["retryable"] is True  # fal said X-Fal-Retryable: true
    rejected = got["rejected"]["error"]
    assert rejected["code"] == "fal_rejected"
    assert rejected["details"]["status_code"] == 422
    assert rejected["details"]["detail"][0]["loc"] == ["body", "image_url"]
    assert "image_url" in rejected["message"]
    result_500 = got["result-500"]["error"]
    assert (result_500["code"], result_500["details"]["status_code"]) == ("fal_failed", 500)
    for rid in ("job-error", "rejected", "result-500"):
        assert got[rid]["video"] is None
        assert got[rid]["seed"] is None
        assert got[rid]["fal_request_id"]


async def test_a_repeated_request_id_starts_one_job_and_gets_one_event(topics: Topics) -> None:
    async with emulator_running(EmulatorConfig(run_time=(0.2, 0.2))) as fal:
        async with relay_running(relay_settings(topics, fal.base_url)) as relay:
            await produce(
                topics.bootstrap,
                topics.requests,
                [request("twice"), request("twice"), request("once")],
            )
            got = events(await consume(topics.bootstrap, topics.results, 2))
            duplicates = relay.metrics.registry.get_sample_value("lynx_relay_duplicates_total")
        submissions = fal.stats()["submissions"]
    assert sorted(got) == ["once", "twice"]
    assert submissions == 2
    assert duplicates == 1
    assert len(await consume_all(topics.bootstrap, topics.results)) == 2
    committed, ends = await committed_and_end(topics)
    assert committed == ends


async def test_health_endpoints_and_metrics(topics: Topics) -> None:
    async with emulator_running(EmulatorConfig(run_time=(0.01, 0.01))) as fal:
        async with relay_running(relay_settings(topics, fal.base_url)) as relay:
            await produce(topics.bootstrap, topics.requests, [request("m1"), b"{oops"])
            await consume(topics.bootstrap, topics.results, 1)
            await consume(topics.bootstrap, topics.dead_letters, 1)
            base = f"http://127.0.0.1:{relay.ops_port}"
            async with httpx.AsyncClient() as http:
                live = await http.get(f"{base}/livez")
                ready = await http.get(f"{base}/readyz")
                metrics = (await http.get(f"{base}/metrics")).text
    assert (live.status_code, ready.status_code) == (200, 200)
    for line in (
        'lynx_relay_results_total{error_code="none",status="succeeded"} 1.0',
        'lynx_relay_requests_rejected_total{reason="not_json"} 1.0',
        "lynx_relay_dead_letters_total 1.0",
        "lynx_relay_requests_consumed_total 2.0",
        'lynx_relay_fal_http_requests_total{endpoint="submit",status_class="2xx"} 1.0',
        'lynx_relay_fal_http_requests_total{endpoint="result",status_class="2xx"} 1.0',
        "lynx_relay_job_run_seconds_count 1.0",
    ):
        assert line in metrics, line
    lag = re.findall(
        r'lynx_relay_consumer_lag_records\{partition="(\d)",topic="([^"]+)"\}', metrics
    )
    assert sorted(lag) == [(str(p), topics.requests) for p in range(3)]
