"""The operator's and the requester's commands against a real run (Kafka, the fal emulator,
the relay): ``submit``, ``requests show``, ``dlq list | redrive``, ``config``; and a relay
that starts before its topics exist."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

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
from tests.integration.processes import relay_env

# A 1x1 PNG: the CLI turns a local image into a data URI.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


class Ran:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


async def cli(*args: str, env: dict[str, str], within: float = 90) -> Ran:
    """``lynx-relay ARGS`` as a child process (the relay under test runs in this one)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(within):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def test_submit_shows_progress_prints_the_result_and_exits_by_its_status(
    topics: Topics, tmp_path: Path
) -> None:
    """``submit`` publishes a request built from flags (a local image becomes a data URI),
    shows its progress on stderr, prints its result event on stdout, and exits 0 on success,
    1 on failure, 2 for a request the relay would refuse. ``requests show`` then reports
    the request's ledger state and fal id, the same as its result event's."""
    image = tmp_path / "subject.png"
    image.write_bytes(PIXEL)
    progress = f"{topics.requests}-progress"
    overrides = {
        "RELAY_PROGRESS_TOPIC": progress,
        "RELAY_PROGRESS_MIN_INTERVAL_S": "0.1",
        "RELAY_TOPICS_PARTITIONS": "2",
    }
    env = relay_env(topics, "http://127.0.0.1:9", **overrides)
    tag = uuid.uuid4().hex[:8]
    config = EmulatorConfig(run_time=(0.3, 0.3))
    async with emulator_running(config) as fal:
        async with relay_running(relay_settings(topics, fal.base_url, **overrides)):
            ok, bad, refused, queued = await asyncio.gather(
                cli(
                    "submit",
                    "--image",
                    str(image),
                    "--prompt",
                    "A person waves",
                    "--tenant",
                    "acme",
                    "--num-frames",
                    "33",
                    "--request-id",
                    f"ok-{tag}",
                    "--timeout",
                    "60",
                    env=env,
                ),
                cli(
                    "submit",
                    "--image",
                    "https://example.com/subject.png",
                    "--prompt",
                    "x [emulator:job-error]",
                    "--timeout",
                    "60",
                    env=env,
                ),
                cli(
                    "submit", "--image", str(image), "--prompt", "p", "--num-frames", "90", env=env
                ),
                cli(
                    "submit",
                    "--image",
                    str(image),
                    "--prompt",
                    "later",
                    "--request-id",
                    f"nowait-{tag}",
                    "--no-wait",
                    env=env,
                ),
            )
            later = events(await consume(topics.bootstrap, topics.results, 3, within=60))
            shown, table, unknown = await asyncio.gather(
                cli("requests", "show", f"ok-{tag}", "--json", env=env),
                cli("requests", "show", f"ok-{tag}", env=env),
                cli("requests", "show", f"never-{tag}", env=env),
            )
        jobs = fal.stats(include_jobs=True)["jobs"]

    assert ok.code == 0, ok.stderr
    result = ok.json()
    assert (result["request_id"], result["status"]) == (f"ok-{tag}", "succeeded")
    assert result["video"]["url"].startswith("http")
    assert "running at fal" in ok.stderr
    assert "fal: " in ok.stderr  # one of fal's log lines
    (sent,) = [j for j in jobs if j["input"]["prompt"] == "A person waves"]
    assert sent["input"]["image_url"] == "data:image/png;base64," + base64.b64encode(PIXEL).decode()
    assert sent["input"]["num_frames"] == 33

    assert bad.code == 1, bad.stderr
    assert bad.json()["status"] == "failed"

    assert refused.code == 2
    assert refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "num_frames" in refused.stderr
    assert len(jobs) == 3  # ok, bad and the --no-wait one; the refused one was never sent

    assert queued.code == 0, queued.stderr
    where = queued.json()
    assert (where["request_id"], where["topic"]) == (f"nowait-{tag}", topics.requests)
    assert later[f"nowait-{tag}"]["status"] == "succeeded"

    assert shown.code == 0, shown.stderr
    found = shown.json()
    assert found["ledger"]["state"] == "finished"
    assert found["ledger"]["status"] == "succeeded"
    assert found["ledger"]["fal_request_id"] == result["fal_request_id"] == sent["request_id"]
    assert [r["event"]["status"] for r in found["results"]] == ["succeeded"]
    assert result["fal_request_id"] in table.stdout
    assert "finished" in table.stdout
    assert unknown.code == 1
    assert "nothing" in unknown.stdout


async def test_dlq_redrive_turns_a_fixed_dead_letter_into_one_success_even_run_twice(
    topics: Topics,
) -> None:
    """A request refused by the input policy (its image host not allowed) is dead-lettered;
    once the operator allows the host, ``dlq redrive`` sends it back and it succeeds: one
    ``succeeded`` event and one fal job, though redrive ran twice at once and again after.
    A dry run sends nothing, and a letter with no request_id is never sent back."""
    strict = {"RELAY_IMAGE_URL_ALLOWED_HOSTS": "cdn.example.org"}
    tag = uuid.uuid4().hex[:8]
    rid = f"fixme-{tag}"
    async with emulator_running(EmulatorConfig(run_time=(0.05, 0.1))) as fal:
        async with relay_running(relay_settings(topics, fal.base_url, **strict)):
            await produce(topics.bootstrap, topics.requests, [request(rid)], partition=0)
            await produce(topics.bootstrap, topics.requests, [b"{not json"], partition=1)
            first = events(await consume(topics.bootstrap, topics.results, 1))
            await consume(topics.bootstrap, topics.dead_letters, 2)
        assert first[rid]["error"]["code"] == "invalid_request"

        env = relay_env(topics, fal.base_url)  # the fix: any https host again
        listed = await cli("dlq", "list", "--json", env=env)
        policy = await cli("dlq", "list", "--code", "policy", env=env)
        async with relay_running(relay_settings(topics, fal.base_url)):
            _committed, ends_before = await committed_and_end(topics)
            dry = await cli("dlq", "redrive", "--dry-run", env=env)
            _committed, ends_after_dry = await committed_and_end(topics)
            once, twice = await asyncio.gather(
                cli("dlq", "redrive", env=env), cli("dlq", "redrive", env=env)
            )
            await consume(topics.bootstrap, topics.results, 2)
            # Every copy sent back has been read and settled: the group's committed offsets
            # reach the topic's end (Kafka's state; there is no event to await for it).
            async with asyncio.timeout(30):
                while (state := await committed_and_end(topics))[0] != state[1]:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            again = await cli("dlq", "redrive", env=env)
        jobs = fal.stats(include_jobs=True)["jobs"]

    assert listed.code == 0, listed.stderr
    letters = listed.json()
    assert sorted(letter["code"] for letter in letters) == ["not_json", "policy"]
    (refused,) = [letter for letter in letters if letter["code"] == "policy"]
    assert refused["request_id"] == rid
    assert "cdn.example.org" in refused["message"] or "host" in refused["message"]
    assert rid in policy.stdout
    assert "not_json" not in policy.stdout

    assert dry.code == 0, dry.stderr
    assert "would send back 1, skipped 1" in dry.stdout
    assert ends_after_dry == ends_before

    assert once.code == twice.code == 0, once.stderr + twice.stderr
    assert "sent back 1" in once.stdout + twice.stdout
    assert again.code == 0, again.stderr
    assert "sent back 0, skipped 2" in again.stdout
    assert "accepted this request_id" in again.stdout

    results = await consume_all(topics.bootstrap, topics.results)
    statuses = [json.loads(r.value)["status"] for r in results if r.key == rid.encode()]
    assert statuses == ["failed", "succeeded"]
    assert len(jobs) == 1
    redriven = await consume_all(topics.bootstrap, topics.requests, partitions=topics.partitions)
    copies = [r for r in redriven if r.key == rid.encode()]
    marked = [dict(r.headers).get("x-relay-redriven-from") for r in copies]
    assert marked.count(None) == 1  # the original
    sent_back = [r for r, mark in zip(copies, marked, strict=True) if mark is not None]
    assert 1 <= len(sent_back) <= 2  # one or two copies sent back, the same bytes
    original = copies[marked.index(None)]
    for copy, mark in zip(sent_back, [m for m in marked if m is not None], strict=True):
        assert copy.value == original.value
        assert mark.startswith(topics.dead_letters.encode())


async def test_config_prints_the_effective_settings_with_secrets_masked(topics: Topics) -> None:
    secret = "fal-key-id:do-not-print-4711"
    env = relay_env(
        topics,
        "http://127.0.0.1:9",
        FAL_KEY=secret,
        FAL_API_URL="http://relay:hunter2@127.0.0.1:9/v1",
        RELAY_MAX_IN_FLIGHT="7",
    )
    shown, bad = await asyncio.gather(
        cli("config", "--json", env=env), cli("config", env={**env, "RELAY_MAX_IN_FLIGHT": "many"})
    )
    assert shown.code == 0, shown.stderr
    assert secret not in shown.stdout
    assert "hunter2" not in shown.stdout
    settings = shown.json()
    assert settings["FAL_KEY"] == {"value": "**** (set)", "from_env": True}
    assert settings["RELAY_MAX_IN_FLIGHT"] == {"value": "7", "from_env": True}
    assert settings["RELAY_REQUESTS_TOPIC"]["value"] == topics.requests
    assert settings["RELAY_DEDUPE_RETENTION_S"]["from_env"] is False
    assert bad.code == 2
    assert "RELAY_MAX_IN_FLIGHT" in bad.stderr


async def test_a_relay_started_before_its_topic_exists_sees_it_within_its_refresh(
    kafka_bootstrap: str,
) -> None:
    """With topic creation off, a relay started before its requests topic exists answers a
    request published once the topic is created after its start, within 30 s (its consumer
    refreshes metadata every 10 s, not aiokafka's 5 minutes)."""
    tag = uuid.uuid4().hex[:10]
    topics = Topics(
        kafka_bootstrap, f"req-{tag}", f"res-{tag}", f"dlq-{tag}", f"grp-{tag}", 2, f"jobs-{tag}"
    )
    settings = {"RELAY_CREATE_TOPICS": "false", "RELAY_TOPICS_PARTITIONS": "2"}
    async with emulator_running(EmulatorConfig(run_time=(0.05, 0.1))) as fal:
        async with relay_running(relay_settings(topics, fal.base_url, **settings)):
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                assert topics.requests not in await admin.list_topics()
                await admin.create_topics(
                    [NewTopic(topics.requests, num_partitions=2, replication_factor=1)]
                )
            finally:
                await admin.close()
            await produce(topics.bootstrap, topics.requests, [request("late-1")])
            got = events(await consume(topics.bootstrap, topics.results, 1, within=30))
    assert got["late-1"]["status"] == "succeeded"
