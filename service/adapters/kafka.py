"""Kafka behind the ``Inbox`` and ``Outbox`` ports, with aiokafka.

The consumer never auto-commits: the relay commits the contiguous finished prefix. The
producer writes with ``acks=all`` and idempotence, and a write returns only once the broker
acknowledged it. Rebalance callbacks are forwarded to the relay, which commits what is
finished for the partitions it loses before they move.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.helpers import create_ssl_context

from service.config import Settings
from service.core.offsets import Partition
from service.messages import ResultEvent
from service.ports import AssignmentListener, InboundRecord

CLIENT_ID = "lynx-relay"


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security options shared by our consumer, producer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
        "client_id": CLIENT_ID,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        context: ssl.SSLContext = create_ssl_context(cafile=settings.kafka_ssl_cafile)
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None  # checked by Settings
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return options


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, listener: AssignmentListener) -> None:
        self._listener = listener

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            await self._listener.partitions_revoked(
                {Partition(tp.topic, tp.partition) for tp in revoked}
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            await self._listener.partitions_assigned(
                {Partition(tp.topic, tp.partition) for tp in assigned}
            )


class KafkaInbox:
    """The requests topic, consumed in our group."""

    def __init__(self, settings: Settings) -> None:
        self._topic = settings.relay_requests_topic
        self._consumer = AIOKafkaConsumer(
            group_id=settings.relay_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **client_options(settings),
        )

    async def start(self, listener: AssignmentListener) -> None:
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=_Rebalance(listener))

    async def stop(self) -> None:
        """Leave the group (its partitions move at once) and close."""
        await self._consumer.stop()

    async def fetch(self, max_records: int, max_wait: float) -> list[InboundRecord]:
        batches = await self._consumer.getmany(
            timeout_ms=int(max_wait * 1000), max_records=max_records
        )
        return [
            InboundRecord(
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                key=r.key,
                value=r.value,
                headers=tuple((k, bytes(v) if v is not None else b"") for k, v in r.headers),
            )
            for records in batches.values()
            for r in records
        ]

    def pause(self) -> None:
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(*self._consumer.assignment())

    def rewind(self, record: InboundRecord) -> None:
        self._consumer.seek(TopicPartition(record.topic, record.partition), record.offset)

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        await self._consumer.commit(
            {TopicPartition(p.topic, p.partition): offset for p, offset in offsets.items()}
        )


class KafkaOutbox:
    """The results and dead-letter topics."""

    def __init__(self, settings: Settings) -> None:
        self._results = settings.relay_results_topic
        self._dead_letters = settings.relay_dead_letter_topic
        self._producer = AIOKafkaProducer(
            acks="all", enable_idempotence=True, linger_ms=5, **client_options(settings)
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish_result(self, event: ResultEvent) -> None:
        await self._producer.send_and_wait(
            self._results, value=event.to_bytes(), key=event.request_id.encode()
        )

    async def dead_letter(self, record: InboundRecord, code: str, message: str) -> None:
        headers = [
            *record.headers,
            ("x-relay-error-code", code.encode()),
            ("x-relay-error-message", message.encode("utf-8", "replace")),
            ("x-relay-source-topic", record.topic.encode()),
            ("x-relay-source-partition", str(record.partition).encode()),
            ("x-relay-source-offset", str(record.offset).encode()),
        ]
        await self._producer.send_and_wait(
            self._dead_letters, value=record.value, key=record.key, headers=headers
        )
