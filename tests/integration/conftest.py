"""Integration fixtures: unique topics on the session's real Kafka, a fal emulator per test,
and relays running in this process through the real composition root."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from fal_emulator.config import EmulatorConfig
from fal_emulator.server import FalEmulator
from service.app import RelayService
from service.config import Settings, load_settings

pytestmark = pytest.mark.kafka


@dataclass(frozen=True)
class Topics:
    bootstrap: str
    requests: str
    results: str
    dead_letters: str
    group: str
    partitions: int
    jobs: str


async def create_topics(bootstrap: str) -> Topics:
    """Fresh topic and group names (3 request partitions), created on ``bootstrap``."""
    tag = uuid.uuid4().hex[:10]
    t = Topics(bootstrap, f"req-{tag}", f"res-{tag}", f"dlq-{tag}", f"grp-{tag}", 3, f"jobs-{tag}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(t.requests, num_partitions=t.partitions, replication_factor=1),
                NewTopic(t.results, num_partitions=1, replication_factor=1),
                NewTopic(t.dead_letters, num_partitions=1, replication_factor=1),
            ]
        )
    finally:
        await admin.close()
    return t


@pytest.fixture
async def topics(kafka_bootstrap: str) -> Topics:
    """Fresh topics and group for one test on the session's broker."""
    return await create_topics(kafka_bootstrap)


@asynccontextmanager
async def emulator_running(config: EmulatorConfig) -> AsyncIterator[FalEmulator]:
    emulator = FalEmulator(config)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def relay_settings(topics: Topics, fal_url: str, **overrides: str) -> Settings:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": topics.bootstrap,
        "FAL_QUEUE_URL": fal_url,
        "RELAY_REQUESTS_TOPIC": topics.requests,
        "RELAY_RESULTS_TOPIC": topics.results,
        "RELAY_DEAD_LETTER_TOPIC": topics.dead_letters,
        "RELAY_GROUP_ID": topics.group,
        "RELAY_JOBS_TOPIC": topics.jobs,
        "RELAY_JOBS_TOPIC_PARTITIONS": "3",
        "RELAY_HTTP_HOST": "127.0.0.1",
        "RELAY_HTTP_PORT": "0",
        "RELAY_POLL_MIN_INTERVAL_S": "0.02",
        "RELAY_POLL_MAX_INTERVAL_S": "0.1",
        "RELAY_COMMIT_INTERVAL_S": "0.2",
        # fal's request history on the same emulator (its Platform API is under /v1).
        "FAL_API_URL": fal_url.rstrip("/") + "/v1",
        "RELAY_RECONCILE_INTERVAL_S": "0.2",
        # The emulator's jobs last fractions of a second: a lost submit that created nothing
        # is sent again after 5 s, not fal's 20 minutes.
        "RELAY_RECONCILE_GIVE_UP_S": "5",
        **overrides,
    }
    return load_settings(env)


@asynccontextmanager
async def relay_running(settings: Settings) -> AsyncIterator[RelayService]:
    """A relay through the real composition root; stopped (and committed) on exit."""
    service = RelayService(settings)
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises the start-up error
    assert ready in done, "relay did not become ready"
    try:
        yield service
    finally:
        service.stop()
        async with asyncio.timeout(60):
            await task


RelayFactory = Callable[..., AbstractAsyncContextManager[RelayService]]


def request(rid: str, prompt: str = "A person carves a pumpkin", **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "request_id": rid,
        "input": {"image_url": "https://example.com/subject.png", "prompt": prompt},
        "metadata": {"tenant": "acme", "n": rid},
    }
    body.update(fields)
    return json.dumps(body).encode()


async def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes],
    *,
    partition: int | None = None,
    keys: bool = True,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i, value in enumerate(values):
            key = None
            if keys:
                try:
                    key = json.loads(value)["request_id"].encode()
                except (ValueError, KeyError, TypeError, AttributeError):
                    key = f"k{i}".encode()
            await producer.send_and_wait(
                topic, value, key=key, partition=partition if partition is not None else i % 3
            )
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, count: int, within: float = 60) -> list[Any]:
    """The first ``count`` records of ``topic`` (from its start); fails after ``within`` s."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",  # the relay writes in transactions
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(within):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def consume_all(bootstrap: str, topic: str, partitions: int = 1) -> list[Any]:
    """Every record of ``topic`` up to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, 0)  # seek_to_beginning() after end_offsets() lands at the end
        records: list[Any] = []
        async with asyncio.timeout(30):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    records.extend(
                        r for r in batch if r.offset < ends[TopicPartition(r.topic, r.partition)]
                    )
        return records
    finally:
        await consumer.stop()


async def committed_and_end(topics: Topics) -> tuple[dict[int, int], dict[int, int]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=topics.bootstrap)
    await admin.start()
    await consumer.start()
    try:
        offsets = await admin.list_consumer_group_offsets(topics.group)
        committed = {
            tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topics.requests
        }
        parts = [TopicPartition(topics.requests, p) for p in range(topics.partitions)]
        ends = {tp.partition: end for tp, end in (await consumer.end_offsets(parts)).items()}
        return committed, {p: e for p, e in ends.items() if e > 0}
    finally:
        await admin.close()
        await consumer.stop()


async def wait_committed(topics: Topics, expected: dict[int, int], within: float = 30) -> None:
    """Until the group's committed offsets are ``expected``. Committed offsets are seen only
    by asking the broker, so this asks every 0.1 s, up to ``within`` seconds."""
    async with asyncio.timeout(within):
        while (await committed_and_end(topics))[0] != expected:  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.1)


def events(records: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Result events by request_id; fails on a second event for one request_id."""
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        event = json.loads(record.value)
        assert event["request_id"] not in out, f"two events for {event['request_id']}"
        assert record.key == event["request_id"].encode()
        out[event["request_id"]] = event
    return out
