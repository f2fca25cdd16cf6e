"""Videos copied to the user's object storage, with real Kafka, the fal emulator (serving
real MP4 bytes) and a real S3-compatible server (S3Proxy): every object with the right bytes
and key, a kill -9 during copies that redoes copies and never jobs, a store that is down
and comes back, and fal's copies deleted after the copy."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections import Counter
from typing import Any

import httpx
import pytest

from fal_emulator.config import EmulatorConfig
from tests.integration.conftest import (
    Topics,
    consume,
    consume_all,
    emulator_running,
    events,
    produce,
    relay_running,
    relay_settings,
    request,
)
from tests.integration.processes import RelayProcess, relay_env
from tests.object_storage import S3Server

pytestmark = pytest.mark.kafka


def storage_env(s3: S3Server, bucket: str, **extra: str) -> dict[str, str]:
    return {
        "RELAY_OUTPUT_URL": f"s3://{bucket}/runs/",
        "RELAY_OUTPUT_ENDPOINT_URL": s3.endpoint,
        "RELAY_OUTPUT_REGION": s3.region,
        # The short backoff of a test: a store that is down is tried again within a second.
        "RELAY_OUTPUT_RETRY_S": "120",
        **extra,
    }


@pytest.fixture
def aws_credentials(s3_endpoint: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The standard chain's variables, as a deployment would set them (in-process relays)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_endpoint.identity)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_endpoint.credential)
    return s3_endpoint


async def fal_bytes(url: str) -> bytes:
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content


async def test_fifty_videos_are_stored_with_their_bytes_and_keys(
    topics: Topics, aws_credentials: S3Server
) -> None:
    s3 = aws_credentials
    bucket = await s3.create_bucket_async("videos")
    config = EmulatorConfig(run_time=(0.05, 0.2), output_bytes=100_000)
    async with emulator_running(config) as fal:
        settings = relay_settings(topics, fal.base_url, **storage_env(s3, bucket))
        async with relay_running(settings):
            await produce(
                topics.bootstrap,
                topics.requests,
                [
                    request(f"v-{i}", f"video {i}", tenant="acme" if i % 2 else "bolt")
                    for i in range(50)
                ],
            )
            got = events(await consume(topics.bootstrap, topics.results, 50, within=120))
            originals = {rid: await fal_bytes(e["video"]["fal_url"]) for rid, e in got.items()}
        jobs = fal.stats(include_jobs=True)["jobs"]
    assert len(jobs) == 50
    keys = await asyncio.to_thread(s3.object_keys, bucket)
    assert keys == sorted(f"runs/{'acme' if int(rid[2:]) % 2 else 'bolt'}/{rid}.mp4" for rid in got)
    for rid, event in got.items():
        assert event["status"] == "succeeded", event
        video = event["video"]
        key = video["url"].removeprefix(f"s3://{bucket}/")
        stored = await asyncio.to_thread(s3.object_bytes, bucket, key)
        assert stored == originals[rid]
        assert len(stored) == video["file_size"] == 100_000
        assert video["sha256"] == hashlib.sha256(stored).hexdigest()
        assert stored[4:8] == b"ftyp"  # an MP4, as fal's CDN served it


async def test_a_kill_during_copies_redoes_copies_never_jobs(
    topics: Topics, s3_endpoint: S3Server
) -> None:
    """kill -9 while copies of 8 MB videos stream; a second relay takes over: every object
    is there, one event per request, and fal saw each job once."""
    s3 = s3_endpoint
    bucket = await s3.create_bucket_async("kill")
    config = EmulatorConfig(run_time=(0.05, 0.1), output_bytes=8_000_000)
    count = 10
    async with emulator_running(config) as fal:
        env = {
            **relay_env(topics, fal.base_url),
            **storage_env(s3, bucket, RELAY_OUTPUT_MAX_COPIES="2", RELAY_OUTPUT_PART_MIB="5"),
            "AWS_ACCESS_KEY_ID": s3.identity,
            "AWS_SECRET_ACCESS_KEY": s3.credential,
        }
        first = await RelayProcess(env, "first").start()
        try:
            await produce(
                topics.bootstrap,
                topics.requests,
                [request(f"k-{i}", f"video {i}") for i in range(count)],
            )
            # Some copies are done and others are streaming: kill it there.
            await first.wait_for("output_stored", within=120)
            assert first.proc is not None
            first.proc.send_signal(signal.SIGKILL)
            await first.proc.wait()
        finally:
            await first.close()
        stored_before = first.count("output_stored")
        second = await RelayProcess(env, "second").start()
        try:
            await consume(topics.bootstrap, topics.results, count, within=180)
            assert await second.terminate() == 0
        finally:
            await second.close()
        jobs = fal.stats(include_jobs=True)["jobs"]
    results = await consume_all(topics.bootstrap, topics.results)
    per_request = Counter(json.loads(r.value)["request_id"] for r in results)
    assert per_request == {f"k-{i}": 1 for i in range(count)}
    assert len(jobs) == count  # no job was submitted again
    assert stored_before < count  # the kill came while copies were left to do
    keys = await asyncio.to_thread(s3.object_keys, bucket)
    assert keys == sorted(f"runs/default/k-{i}.mp4" for i in range(count))
    for result in results:
        video: dict[str, Any] = json.loads(result.value)["video"]
        key = video["url"].removeprefix(f"s3://{bucket}/")
        head = await asyncio.to_thread(s3.client().head_object, Bucket=bucket, Key=key)
        assert head["ContentLength"] == 8_000_000


async def test_a_store_that_is_down_is_waited_for_and_nothing_is_lost(
    topics: Topics, aws_credentials: S3Server
) -> None:
    """The store goes down; the jobs finish at fal and their copies fail and are retried;
    once it is back, every video is stored and every request succeeds."""
    s3 = aws_credentials
    if s3.port is None:
        pytest.fail("this test stops the store: it needs the session's own S3Proxy")
    bucket = await s3.create_bucket_async("down")
    config = EmulatorConfig(run_time=(0.05, 0.1), output_bytes=200_000)
    async with emulator_running(config) as fal:
        settings = relay_settings(topics, fal.base_url, **storage_env(s3, bucket))
        async with relay_running(settings) as relay:
            await s3.stop_async()
            try:
                await produce(
                    topics.bootstrap, topics.requests, [request(f"d-{i}") for i in range(8)]
                )
                retried = relay.metrics.output_copies.labels("retried")
                async with asyncio.timeout(60):
                    # Every job ended at fal and its copy failed at least once.
                    while retried._value.get() < 8:  # noqa: ASYNC110 - a counter, no event
                        await asyncio.sleep(0.05)
            finally:
                await s3.start_async()
            got = events(await consume(topics.bootstrap, topics.results, 8, within=120))
        jobs = fal.stats(include_jobs=True)["jobs"]
    assert {e["status"] for e in got.values()} == {"succeeded"}
    assert len(jobs) == 8
    keys = await asyncio.to_thread(s3.object_keys, bucket)
    assert keys == sorted(f"runs/default/d-{i}.mp4" for i in range(8))


async def test_fals_copies_are_deleted_after_the_copy(
    topics: Topics, aws_credentials: S3Server
) -> None:
    s3 = aws_credentials
    bucket = await s3.create_bucket_async("delete")
    async with emulator_running(EmulatorConfig(run_time=(0.05, 0.1))) as fal:
        settings = relay_settings(
            topics,
            fal.base_url,
            **storage_env(
                s3,
                bucket,
                RELAY_FAL_DELETE_AFTER_COPY="true",
                RELAY_FAL_OUTPUT_TTL_S="86400",
                RELAY_FAL_STORE_IO="false",
            ),
        )
        async with relay_running(settings):
            await produce(topics.bootstrap, topics.requests, [request(f"x-{i}") for i in range(5)])
            got = events(await consume(topics.bootstrap, topics.results, 5))
        jobs = fal.stats(include_jobs=True)["jobs"]
        async with httpx.AsyncClient() as client:
            gone = [(await client.get(e["video"]["fal_url"])).status_code for e in got.values()]
    assert {e["status"] for e in got.values()} == {"succeeded"}
    assert [j["payloads_deleted"] for j in jobs] == [True] * 5
    assert set(gone) <= {404, 410}  # fal's file is gone...
    for job in jobs:
        lifecycle = json.loads(job["headers_recorded"]["X-Fal-Object-Lifecycle-Preference"])
        assert lifecycle == {"expiration_duration_seconds": 86400}
        assert job["headers_recorded"]["X-Fal-Store-IO"] == "0"
    # ... and was deleted after its copy: the stored object is whole.
    for event in got.values():
        key = event["video"]["url"].removeprefix(f"s3://{bucket}/")
        stored = await asyncio.to_thread(s3.object_bytes, bucket, key)
        assert hashlib.sha256(stored).hexdigest() == event["video"]["sha256"]
