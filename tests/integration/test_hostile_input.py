"""10,000 hostile messages through real Kafka, mixed with 100 valid requests: the relay stays
up, dead-letters every hostile one with a reason, gets every valid one done, and commits to
the log end."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer

from fal_emulator.config import EmulatorConfig
from tests.integration.conftest import (
    Topics,
    committed_and_end,
    consume,
    emulator_running,
    events,
    relay_running,
    relay_settings,
    request,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

HOSTILE = 10_000
VALID = 100


def hostile(rng: random.Random, i: int) -> bytes:
    """One of many kinds of garbage; each is refused by the decoder for its own reason."""
    good = {"image_url": "https://e.com/a.png", "prompt": "p"}
    kind = i % 12
    if kind == 0:
        return rng.randbytes(rng.randint(0, 200))
    if kind == 1:
        return b'{"request_id": "x\xff\xfe", "input": {}}'  # invalid UTF-8
    if kind == 2:
        return b"[" * 5000 + b"]" * 5000  # deep nesting
    if kind == 3:
        return json.dumps(
            {"request_id": f"h-{i}", "input": {**good, "num_frames": 10**30}}
        ).encode()
    if kind == 4:
        return b'{"request_id": "h-%d", "input": {"prompt": NaN}}' % i
    if kind == 5:
        return b'{"request_id": "h-%d", "request_id": "h-%d", "input": {}}' % (i, i)
    if kind == 6:  # a wrong type in a field (each value is wrong for its field)
        field, wrong = rng.choice(
            [
                ("image_url", [1]),
                ("image_url", {"u": 1}),
                ("prompt", 7),
                ("prompt", ["p"]),
                ("num_frames", "81"),
                ("num_frames", 81.5),
                ("num_frames", True),
                ("resolution", 720),
                ("seed", "1"),
                ("seed", [1]),
                ("guidance_scale", "5"),
            ]
        )
        return json.dumps({"request_id": f"h-{i}", "input": {**good, field: wrong}}).encode()
    if kind == 7:
        return json.dumps({"request_id": f"h\x00\x1b[31m-{i}", "input": good}).encode()
    if kind == 8:
        return json.dumps([f"h-{i}", good]).encode()
    if kind == 9:
        return json.dumps({"request_id": f"h-{i}", "input": good, "extra": {"x": 1}}).encode()
    if kind == 10:
        return json.dumps(
            {"request_id": f"h-{i}", "input": {**good, "image_url": "javascript:alert(1)"}}
        ).encode()
    if i % 1000 == 11:  # a few near-1 MiB strings
        return json.dumps(
            {"request_id": f"h-{i}", "input": {**good, "prompt": "a" * 900_000}}
        ).encode()
    return json.dumps(
        {"request_id": f"h-{i}", "metadata": {"m": "x" * 20_000}, "input": good}
    ).encode()


async def test_ten_thousand_hostile_messages(topics: Topics) -> None:
    rng = random.Random(20261125)
    messages = [hostile(rng, i) for i in range(HOSTILE)]
    valid = [request(f"ok-{i}") for i in range(VALID)]
    mixed: list[bytes] = []
    for i, message in enumerate(messages):
        mixed.append(message)
        if i % (HOSTILE // VALID) == 0:
            mixed.append(valid[i // (HOSTILE // VALID)])
    async with emulator_running(EmulatorConfig(run_time=(0.01, 0.05))) as fal:
        settings = relay_settings(topics, fal.base_url, RELAY_MAX_IN_FLIGHT="64")
        async with relay_running(settings) as relay:
            # Batched (up to 1 MiB, 5 ms linger): one message a request took ~20 s to publish;
            # the relay reads the same records, in the same order per partition.
            producer = AIOKafkaProducer(
                bootstrap_servers=topics.bootstrap,
                acks="all",
                max_request_size=2_000_000,
                max_batch_size=1_048_576,
                linger_ms=5,
            )
            await producer.start()
            try:
                sent = [
                    await producer.send(topics.requests, m, partition=i % 3)
                    for i, m in enumerate(mixed)
                ]
                for future in sent:
                    await future
            finally:
                await producer.stop()
            dead = await consume(topics.bootstrap, topics.dead_letters, HOSTILE, within=300)
            reasons = Counter(dict(r.headers)["x-relay-error-code"].decode() for r in dead)
            # Every hostile message whose request_id could be read gets a failed event too.
            expected = VALID + reasons["schema"] + reasons["policy"]
            results = await consume(topics.bootstrap, topics.results, expected, within=300)
            assert relay.ready.is_set()
        stats = fal.stats()
    assert sum(reasons.values()) == HOSTILE
    assert set(reasons) <= {
        "too_large",
        "not_utf8",
        "not_json",
        "not_object",
        "missing_request_id",
        "invalid_request_id",
        "schema",
        "policy",
    }
    assert all(dict(r.headers)["x-relay-error-message"] for r in dead)
    every = events(results)
    got = {rid: e for rid, e in every.items() if rid.startswith("ok-")}
    refused = [e for rid, e in every.items() if not rid.startswith("ok-")]
    assert {(e["status"], e["error"]["code"]) for e in refused} == {("failed", "invalid_request")}
    assert sorted(got) == sorted(f"ok-{i}" for i in range(VALID))
    assert {e["status"] for e in got.values()} == {"succeeded"}
    assert stats["submissions"] == VALID
    committed, ends = await committed_and_end(topics)
    assert committed == ends
