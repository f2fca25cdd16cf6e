"""Kafka behind the ``Inbox`` and ``Outbox`` ports, with aiokafka.

The consumer never auto-commits: the relay commits the contiguous finished prefix. Rebalance
callbacks are forwarded to the relay, which hands back and commits the partitions it loses
before they move. With RELAY_GROUP_INSTANCE_ID the consumer is a static member, so a restart
under the same id (a rolling deploy) gets its partitions back without a group rebalance.
The producer writes in transactions (``acks=all``), so the writes of one relay decision
(a result event and its ledger entry) land together or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from service.adapters.kafka_client import client_options
from service.adapters.ledger_codec import encode_entry
from service.config import Settings
from service.core.backoff import Backoff
from service.core.ledger import LedgerEntry
from service.core.offsets import Partition
from service.logs import get_logger
from service.messages import ProgressEvent, ResultEvent
from service.metrics import RelayMetrics
from service.ports import AssignmentListener, InboundRecord


def _inbound(r: Any) -> InboundRecord:
    return InboundRecord(
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        key=r.key,
        value=r.value,
        headers=tuple((k, None if v is None else bytes(v)) for k, v in r.headers),
    )


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

    def __init__(self, settings: Settings, metrics: RelayMetrics) -> None:
        self._topic = settings.relay_requests_topic
        self._settings = settings
        self._metrics = metrics
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._lag_parts: set[TopicPartition] = set()

    def _new_consumer(self) -> AIOKafkaConsumer:
        settings = self._settings
        static = settings.relay_group_instance_id
        return AIOKafkaConsumer(
            group_id=settings.relay_group_id,
            group_instance_id=static,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Results of the relay's own transactions only; aborted ones never count.
            isolation_level="read_committed",
            # A static member that restarts must be back before the group gives up on it.
            session_timeout_ms=int(
                (settings.relay_session_timeout_s or (30 if static else 10)) * 1000
            ),
            heartbeat_interval_ms=3_000,
            # The revoke callback may wait RELAY_SHUTDOWN_GRACE_S for writes to be
            # acknowledged; the group must allow that much, or it evicts us mid-hand-back.
            rebalance_timeout_ms=int((settings.relay_shutdown_grace_s + 30) * 1000),
            # A requests topic created after the relay started (RELAY_CREATE_TOPICS=false) is
            # seen within 10 s, not aiokafka's default 5 minutes; one small request each time.
            metadata_max_age_ms=10_000,
            **client_options(settings),
        )

    async def start(self, listener: AssignmentListener) -> None:
        # Clients are made here, not in __init__: one that never started needs no closing.
        self._consumer = consumer = self._new_consumer()
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        consumer.subscribe([self._topic], listener=_Rebalance(listener))

    @property
    def _c(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "start() first"
        return self._consumer

    async def stop(self) -> None:
        """Leave the group (a static member does not: its partitions wait for its return),
        and close."""
        if self._consumer is not None:
            await self._consumer.stop()
        if self._reader is not None:
            await self._reader.stop()

    async def fetch(self, max_records: int, max_wait: float) -> list[InboundRecord]:
        batches = await self._c.getmany(timeout_ms=int(max_wait * 1000), max_records=max_records)
        await self._export_lag()
        return [_inbound(r) for records in batches.values() for r in records]

    def pause_only(self, parts: set[Partition] | None) -> None:
        assigned = self._c.assignment()
        if parts is None:
            self._c.pause(*assigned)
            return
        paused = {tp for tp in assigned if Partition(tp.topic, tp.partition) in parts}
        self._c.pause(*paused)
        self._c.resume(*(assigned - paused))

    def rewind(self, record: InboundRecord) -> None:
        self._c.seek(TopicPartition(record.topic, record.partition), record.offset)

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        tps = {TopicPartition(p.topic, p.partition): offset for p, offset in offsets.items()}
        await self._c.commit(tps)
        self._committed.update(tps)

    async def read(self, part: Partition, offset: int) -> InboundRecord | None:
        # A consumer of its own, outside the group: seeking the group's consumer would move
        # its fetch position. Made on first use; most backlogs keep their bodies.
        reader = self._reader
        if reader is None:
            reader = AIOKafkaConsumer(
                enable_auto_commit=False,
                isolation_level="read_committed",
                **client_options(self._settings),
            )
            await reader.start()
            self._reader = reader
        tp = TopicPartition(part.topic, part.partition)
        if tp not in reader.assignment():
            reader.assign([*reader.assignment(), tp])
        reader.seek(tp, offset)
        batches = await reader.getmany(tp, timeout_ms=5_000, max_records=1)
        for record in batches.get(tp, []):
            if record.offset == offset:
                return _inbound(record)
            return None  # the log moved past it (compaction or retention): gone
        raise TimeoutError(f"no record at {part.topic}/{part.partition}@{offset} within 5 s")

    def partition_count(self) -> int | None:
        parts = self._c.partitions_for_topic(self._topic)
        return len(parts) if parts else None

    async def _export_lag(self) -> None:
        """Records not yet finished and committed, per partition: the high watermark (from the
        last fetch) minus the group's committed offset. KEDA or a Prometheus-only setup can
        scale on it without an extra exporter."""
        consumer = self._c
        assigned = consumer.assignment()
        for tp in self._lag_parts - assigned:
            self._metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            self._committed.pop(tp, None)
        self._lag_parts = set(assigned)
        for tp in assigned:
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            if tp not in self._committed:
                # Once per assignment: where the group stood before our first commit.
                self._committed[tp] = await consumer.committed(tp) or 0
            lag = max(0, highwater - self._committed[tp])
            self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)


# What one produce request may carry (aiokafka's and the broker's default). A dead-letter copy
# that would not fit with our headers goes without its value, marked, rather than blocking.
MAX_RECORD_BYTES = 1_048_576
_HEADROOM = 8_192
_MESSAGE_HEADER_LIMIT = 1_000


@dataclass(frozen=True, slots=True)
class _Out:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    # A ledger entry goes to the ledger partition of its source partition (modulo the ledger's
    # partitions), so a replica finds the entries of a partition it takes over in one ledger
    # partition (RELAY_LEDGER_SCOPE=owned); None: the key decides.
    source_partition: int | None = None


async def _send(producer: AIOKafkaProducer, r: _Out) -> None:
    partition = None
    if r.source_partition is not None:
        partition = r.source_partition % len(await producer.partitions_for(r.topic))
    await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers), partition=partition)


class KafkaOutbox:
    """The results, dead-letter and ledger topics, written in Kafka transactions.

    Writes are group-committed: whatever the relay asks for while one transaction is in flight
    goes into the next, so a transaction's cost (tens of ms) is shared by many jobs. A caller
    returns once the transaction holding its records committed. After a failed transaction the
    producer is replaced (fencing the old one) and the caller's retry goes into a new one.
    """

    def __init__(self, settings: Settings, *, transactional_id: str, writer: str) -> None:
        self._settings = settings
        self._results = settings.relay_results_topic
        self._dead_letters = settings.relay_dead_letter_topic
        self._ledger = settings.relay_jobs_topic
        self._progress = settings.relay_progress_topic
        self._transactional_id = transactional_id
        self._writer = writer
        self._queue: list[tuple[list[_Out], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._isolate = False
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            acks="all",
            enable_idempotence=True,
            transactional_id=self._transactional_id,
            # Our transactions last milliseconds; a short timeout lets a dead replica's open
            # transaction be aborted quickly, so readers of the ledger are not held back.
            transaction_timeout_ms=15_000,
            max_request_size=MAX_RECORD_BYTES,
            **client_options(self._settings),
        )

    async def start(self) -> None:
        self._producer = producer = self._new_producer()
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        """Write what is queued (a few seconds at most), then close."""
        if self._task is not None:
            # Wall-clock on purpose: a real producer's last flush at process exit, not relay
            # logic the fake clock drives.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.flush()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()

    # --- the Outbox port ------------------------------------------------------------------

    async def record_job(self, entry: LedgerEntry) -> None:
        await self._write([self._ledger_record(entry)])

    async def finish(self, event: ResultEvent, entry: LedgerEntry) -> None:
        key = event.request_id.encode()
        await self._write([_Out(self._results, key, event.to_bytes()), self._ledger_record(entry)])

    async def reject(
        self,
        record: InboundRecord,
        code: str,
        message: str,
        event: ResultEvent | None,
        entry: LedgerEntry,
    ) -> None:
        headers: list[tuple[str, bytes | None]] = [
            *record.headers,
            ("x-relay-error-code", code.encode()),
            ("x-relay-error-message", message[:_MESSAGE_HEADER_LIMIT].encode("utf-8", "replace")),
            ("x-relay-source-topic", record.topic.encode()),
            ("x-relay-source-partition", str(record.partition).encode()),
            ("x-relay-source-offset", str(record.offset).encode()),
        ]
        value = record.value
        size = (
            len(value or b"")
            + len(record.key or b"")
            + sum(len(k) + len(v or b"") for k, v in headers)
        )
        if size > MAX_RECORD_BYTES - _HEADROOM:
            value = None
            headers.append(("x-relay-value-omitted", f"too large: {size} bytes".encode()))
        out = [_Out(self._dead_letters, record.key, value, tuple(headers))]
        if event is not None:
            out.append(_Out(self._results, event.request_id.encode(), event.to_bytes()))
        out.append(self._ledger_record(entry))
        await self._write(out)

    def progress(self, event: ProgressEvent) -> None:
        if self._progress is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Nobody awaits it: retrieve a failure so it is not reported as never retrieved.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append(
            ([_Out(self._progress, event.request_id.encode(), event.to_bytes())], done)
        )
        self._idle.clear()
        self._wake.set()

    # --- group commit ---------------------------------------------------------------------

    def _ledger_record(self, entry: LedgerEntry) -> _Out:
        return _Out(
            self._ledger,
            entry.key.encode(),
            encode_entry(entry, self._writer),
            source_partition=entry.source.partition,
        )

    async def _write(self, records: list[_Out]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((records, done))
        self._idle.clear()
        self._wake.set()
        await done

    async def flush(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            # A caller that gave up (cancelled) before its batch was taken is not written:
            # a write must not land after the relay handed its partition to someone else.
            self._queue = [(records, done) for records, done in self._queue if not done.done()]
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._isolate:
                # After a failed batch, one caller per transaction until one succeeds: a single
                # unwritable record (too large, a topic gone) must not fail every write with it.
                batch, self._queue = self._queue[:1], self._queue[1:]
            else:
                batch, self._queue = self._queue, []
            producer = self._producer
            assert producer is not None
            try:
                async with producer.transaction():
                    for records, _done in batch:
                        for r in records:
                            await _send(producer, r)
            except Exception as exc:
                for _records, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                self._isolate = True
                await self._replace_producer(exc)
            else:
                self._isolate = False
                for _records, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _replace_producer(self, cause: Exception) -> None:
        # The relay logs the condition once (kafka_writes_failing); this is the detail.
        self._log.debug("kafka_transaction_failed", error=repr(cause))
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        backoff = Backoff(0.2, 5.0)
        while True:
            self._producer = producer = self._new_producer()
            try:
                await producer.start()
            except Exception as exc:
                self._log.debug("kafka_producer_restart_failed", error=repr(exc))
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(backoff.next())
            else:
                return
