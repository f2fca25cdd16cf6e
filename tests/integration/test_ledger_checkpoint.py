"""The ledger view's local checkpoint (RELAY_LEDGER_CHECKPOINT_DIR), on real Kafka with relays
as real processes: a relay stopped by SIGTERM leaves a checkpoint; the next one loads it, reads
only the ledger's tail, and still never submits a request twice, resumes what was at fal and
processes new requests. A checkpoint that must not be trusted is ignored and the ledger read
whole, with the same outcomes.

The emulator counts every submission; each test request's prompt names its request_id, so
"none twice" is checked per request, and every result event on the results topic is counted.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fal_emulator.config import EmulatorConfig
from fal_emulator.server import FalEmulator
from service.adapters.ledger_checkpoint import CheckpointPlace
from tests.integration.conftest import (
    Topics,
    consume,
    consume_all,
    emulator_running,
    events,
    produce,
    request,
)
from tests.integration.processes import RelayProcess, relay_env

pytestmark = pytest.mark.kafka

LEDGER_PARTITIONS = 3  # RELAY_JOBS_TOPIC_PARTITIONS in relay_env


def video(rid: str, directives: str = "") -> bytes:
    """A request whose prompt names its request_id (and carries emulator directives)."""
    return request(rid, f"video for {rid}{directives}")


def submissions_by_request(fal: FalEmulator) -> Counter[str]:
    """How often fal was asked for each request (by the request_id in its prompt)."""
    jobs: list[dict[str, Any]] = fal.stats(include_jobs=True)["jobs"]
    return Counter(
        job["input"]["prompt"].removeprefix("video for ").split(" [emulator:")[0] for job in jobs
    )


def checkpoint_file(folder: Path, topics: Topics) -> Path:
    return folder / f"{topics.jobs}.ledger.npz"


def one_line(relay: RelayProcess, event: str) -> dict[str, Any]:
    lines = [line for line in relay.lines if line.get("event") == event]
    assert len(lines) == 1, f"{relay.name} logged {event} {len(lines)} times"
    return lines[0]


async def ledger_records(topics: Topics) -> list[Any]:
    """Every committed record of the ledger topic, as a relay starting now would read it."""
    return await consume_all(topics.bootstrap, topics.jobs, partitions=LEDGER_PARTITIONS)


async def test_a_restart_loads_the_checkpoint_reads_only_the_tail_and_still_dedupes(
    topics: Topics, tmp_path: Path
) -> None:
    """SIGTERM leaves a checkpoint; the next process loads it, reads only what came after its
    positions, resumes the job that was at fal, skips a re-published finished request and
    processes new ones, each once."""
    folder = tmp_path / "checkpoints"
    fast = [f"ck-{i}" for i in range(6)]
    fresh = ["ck-new-0", "ck-new-1"]
    # Still at fal when the first relay stops; it ends while (or soon after) the second starts.
    slow = "ck-slow"
    async with emulator_running(EmulatorConfig(run_time=(0.2, 0.4), seed=21)) as fal:
        env = relay_env(
            topics,
            fal.base_url,
            RELAY_LEDGER_CHECKPOINT_DIR=str(folder),
            RELAY_GROUP_INSTANCE_ID="relay-ck",
            RELAY_MAX_IN_FLIGHT="10",
        )
        first = await RelayProcess(env, "first").start()
        try:
            await produce(
                topics.bootstrap,
                topics.requests,
                [video(slow, " [emulator:run=5]"), *(video(rid) for rid in fast)],
            )
            got_first = events(await consume(topics.bootstrap, topics.results, 6, within=60))
            await first.wait_for("job_submitted", request_id=slow)
            at_fal_at_stop = fal.stats()["in_flight"]
            assert await first.terminate(within=15) == 0
        finally:
            await first.close()
        assert sorted(got_first) == sorted(fast)
        assert at_fal_at_stop == 1  # the slow job really was at fal when the relay stopped

        # What the first relay left: a checkpoint, and the ledger it stands for.
        assert first.count("ledger_ready", source="topic") == 1  # no checkpoint yet then
        assert first.count("ledger_checkpoint_ignored") == 0
        assert one_line(first, "ledger_checkpoint_saved")["entries"] == 7
        assert checkpoint_file(folder, topics).is_file()
        written = CheckpointPlace(
            folder,
            topics.jobs,
            retention=timedelta(days=7),  # RELAY_DEDUPE_RETENTION_S's default
            budget_day=timedelta(days=1),
            max_age=timedelta(hours=12),
        ).load(datetime.now(UTC), LEDGER_PARTITIONS)
        assert written is not None
        ledger = await ledger_records(topics)
        tail = [r for r in ledger if r.offset >= written.positions.get(r.partition, 0)]
        assert len(tail) < len(ledger)

        second = await RelayProcess(env, "second").start()
        try:
            ready = one_line(second, "ledger_ready")
            loaded = one_line(second, "ledger_checkpoint_loaded")
            # A request that finished before the restart, published again (a new record),
            # and two new requests behind it.
            await produce(
                topics.bootstrap,
                topics.requests,
                [video("ck-0"), *(video(rid) for rid in fresh)],
            )
            got = events(await consume(topics.bootstrap, topics.results, 9, within=60))
            await second.wait_for("duplicate_request_skipped", request_id="ck-0", within=30)
            assert await second.terminate(within=15) == 0
        finally:
            await second.close()
        per_request = submissions_by_request(fal)

    assert ready["source"] == "checkpoint"
    assert ready["records_read"] == len(tail)  # only what came after the checkpoint
    assert ready["records_read"] < len(ledger)
    assert loaded["path"] == str(checkpoint_file(folder, topics))
    assert loaded["entries"] == 7
    assert second.count("ledger_checkpoint_ignored") == 0
    # The job at fal was taken up where it was, not submitted again.
    assert second.count("job_resumed", request_id=slow) == 1
    assert second.count("job_resumed") == 1
    assert sorted(got) == sorted([*fast, slow, *fresh])
    assert {e["status"] for e in got.values()} == {"succeeded"}
    # One event per request on the topic (the duplicate added none) and one fal job each.
    results = await consume_all(topics.bootstrap, topics.results)
    assert len(results) == 9
    assert sorted(events(results)) == sorted([*fast, slow, *fresh])
    assert per_request == Counter(dict.fromkeys([*fast, slow, *fresh], 1))
    assert second.count("duplicate_request_skipped") == 1


async def test_an_untrusted_checkpoint_is_ignored_and_the_ledger_read_whole(
    topics: Topics, tmp_path: Path
) -> None:
    """A checkpoint written with another RELAY_DEDUPE_RETENTION_S, then one cut short: each is
    ignored, the ledger is read whole, and re-published requests are still not submitted."""
    folder = tmp_path / "checkpoints"
    path = checkpoint_file(folder, topics)
    done = [f"un-{i}" for i in range(4)]
    async with emulator_running(EmulatorConfig(run_time=(0.2, 0.4), seed=22)) as fal:
        common = {
            "RELAY_LEDGER_CHECKPOINT_DIR": str(folder),
            "RELAY_GROUP_INSTANCE_ID": "relay-un",
            "RELAY_MAX_IN_FLIGHT": "10",
        }
        first = await RelayProcess(relay_env(topics, fal.base_url, **common), "first").start()
        try:
            await produce(topics.bootstrap, topics.requests, [video(rid) for rid in done])
            await consume(topics.bootstrap, topics.results, 4, within=60)
            assert await first.terminate(within=15) == 0
        finally:
            await first.close()
        assert path.is_file()
        ledger_before_b = len(await ledger_records(topics))

        # Another retention (still over RELAY_JOB_TIMEOUT_S's 3600 s): not to be trusted.
        other = relay_env(topics, fal.base_url, **common, RELAY_DEDUPE_RETENTION_S="86400")
        b = await RelayProcess(other, "b").start()
        try:
            b_ignored = one_line(b, "ledger_checkpoint_ignored")
            b_ready = one_line(b, "ledger_ready")
            await produce(topics.bootstrap, topics.requests, [video("un-0"), video("un-new-b")])
            await consume(topics.bootstrap, topics.results, 5, within=60)
            await b.wait_for("duplicate_request_skipped", request_id="un-0", within=30)
            assert await b.terminate(within=15) == 0
        finally:
            await b.close()
        assert one_line(b, "ledger_checkpoint_saved")  # b's own, with its retention

        # b's checkpoint cut short (a disk that filled, a copy gone wrong): unreadable.
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        ledger_before_c = len(await ledger_records(topics))
        c = await RelayProcess(other, "c").start()
        try:
            c_ignored = one_line(c, "ledger_checkpoint_ignored")
            c_ready = one_line(c, "ledger_ready")
            await produce(
                topics.bootstrap,
                topics.requests,
                [video("un-1"), video("un-new-b"), video("un-new-c")],
            )
            await consume(topics.bootstrap, topics.results, 6, within=60)
            await c.wait_for("duplicate_request_skipped", times=2, within=30)
            assert await c.terminate(within=15) == 0
        finally:
            await c.close()
        per_request = submissions_by_request(fal)

    assert b_ignored["path"] == str(path)
    assert "retention_s" in b_ignored["reason"]
    assert b.count("ledger_checkpoint_loaded") == 0
    assert b_ready["source"] == "topic"
    assert b_ready["records_read"] == ledger_before_b  # the whole ledger
    assert b.count("duplicate_request_skipped") == 1

    assert c_ignored["path"] == str(path)
    assert c_ignored["reason"].startswith("unreadable")
    assert c.count("ledger_checkpoint_loaded") == 0
    assert c_ready["source"] == "topic"
    assert c_ready["records_read"] == ledger_before_c
    assert {
        line["request_id"] for line in c.lines if line.get("event") == "duplicate_request_skipped"
    } == {"un-1", "un-new-b"}

    everyone = [*done, "un-new-b", "un-new-c"]
    results = await consume_all(topics.bootstrap, topics.results)
    assert len(results) == 6
    got = events(results)
    assert sorted(got) == sorted(everyone)
    assert {json.loads(r.value)["status"] for r in results} == {"succeeded"}
    assert per_request == Counter(dict.fromkeys(everyone, 1))
