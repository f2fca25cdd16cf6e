"""Kafka for the command-line tools (``submit``, ``requests show``, ``dlq``): read a topic from
a point in time up to its current end, follow topics from their end, publish one record.

The relay's own consumer and producer live in ``adapters.kafka``; these are short-lived
clients without a consumer group, so a tool never joins the relay's group or moves its
offsets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from service.adapters.kafka_client import client_options
from service.config import Settings

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class TopicRecord:
    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: Headers

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name and value is not None:
                return value.decode("utf-8", "replace")
        return None


def _record(raw: object) -> TopicRecord:
    r = raw  # aiokafka's ConsumerRecord (untyped)
    return TopicRecord(
        topic=r.topic,  # type: ignore[attr-defined]
        partition=r.partition,  # type: ignore[attr-defined]
        offset=r.offset,  # type: ignore[attr-defined]
        timestamp=datetime.fromtimestamp(r.timestamp / 1000, UTC),  # type: ignore[attr-defined]
        key=r.key,  # type: ignore[attr-defined]
        value=r.value,  # type: ignore[attr-defined]
        headers=tuple(r.headers or ()),  # type: ignore[attr-defined]
    )


class TopicMissing(Exception):
    """The topic does not exist (or this client may not see it)."""


@asynccontextmanager
async def _consumer(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    # read_committed: the relay writes results, dead letters and the ledger in transactions;
    # an aborted write must not show up as an answer.
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        **client_options(settings),
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """The topic's partitions, from the cluster (a consumer knows only what it has seen)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    parts = sorted(int(p["partition"]) for p in described.get("partitions", []))
    if described.get("error_code", 0) != 0 or not parts:
        raise TopicMissing(f"topic {topic} does not exist")
    return [TopicPartition(topic, p) for p in parts]


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition the relay's producer (Kafka's default partitioner) puts ``key`` in."""
    all_partitions = list(range(partitions))
    chosen: int = DefaultPartitioner()(key, all_partitions, all_partitions)
    return chosen


async def read_topic(
    settings: Settings,
    topic: str,
    *,
    since: datetime | None = None,
    key: bytes | None = None,
) -> AsyncIterator[TopicRecord]:
    """The records of ``topic`` from ``since`` (or its start) up to its end as it was when the
    read began. With ``key``, only the partition that key is written to is read."""
    async with _consumer(settings) as consumer:
        parts = await _partitions(settings, topic)
        if key is not None:
            parts = [parts[partition_for_key(key, len(parts))]]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        starts: dict[TopicPartition, int] = dict.fromkeys(parts, 0)
        if since is not None:
            found = await consumer.offsets_for_times(
                dict.fromkeys(parts, int(since.timestamp() * 1000))
            )
            starts = {tp: ends[tp] if found[tp] is None else found[tp].offset for tp in parts}
        waiting = {tp for tp in parts if starts[tp] < ends[tp]}
        for tp in parts:
            consumer.seek(tp, starts[tp])
        while waiting:
            batches = await consumer.getmany(*waiting, timeout_ms=500)
            for tp, records in batches.items():
                for raw in records:
                    if raw.offset < ends[tp] and (key is None or raw.key == key):
                        yield _record(raw)
            for tp in list(waiting):
                # Past transaction markers the position moves on without a record.
                if await consumer.position(tp) >= ends[tp]:
                    waiting.discard(tp)


class Follower:
    """New records of some topics, from their end at the moment ``open`` returned: opened
    before a request is published, it cannot miss that request's answers."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def records(self, timeout_s: float) -> list[TopicRecord]:
        """What arrived within ``timeout_s`` (possibly nothing)."""
        batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000))
        return [_record(raw) for records in batches.values() for raw in records]


@asynccontextmanager
async def follow(settings: Settings, topics: Sequence[str]) -> AsyncIterator[Follower]:
    async with _consumer(settings) as consumer:
        parts = [tp for topic in topics for tp in await _partitions(settings, topic)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, ends[tp])
        yield Follower(consumer)


class Publisher:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()
    ) -> tuple[int, int]:
        """Publish one record and wait for all in-sync replicas; its partition and offset."""
        meta = await self._producer.send_and_wait(
            topic, value=value, key=key, headers=list(headers)
        )
        return int(meta.partition), int(meta.offset)


@asynccontextmanager
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **client_options(settings))
    await producer.start()
    try:
        yield Publisher(producer)
    finally:
        await producer.stop()
