"""The job ledger on Kafka: its topic, and the feed that keeps the view.

The record format is ``service.adapters.ledger_codec`` (the outbox writes with it, this feed
reads with it). The relay's own entries go into the view the moment Kafka acknowledges them
(``written``) and again when the feed reads them back; the view keeps the newer of two
entries, so that is harmless. This feed is the view's one writer.

The topic is compacted (the latest entry per key is kept) and also deleted by age
(``cleanup.policy=compact,delete``, ``retention.ms`` = RELAY_DEDUPE_RETENTION_S), which is what
bounds the dedupe window; the relay refuses a retention shorter than its job timeout, so the
entry of a job still running is never aged out. An entry is written to the ledger partition of
its source record's partition (modulo the ledger's partitions), so the entries of a request
partition are in one ledger partition.

Starting: from a local checkpoint when one is set and trusted (``ledger_checkpoint``: the view
as of a position per partition, then only the tail is read), else from each partition's start.
Taking partitions over (``take``): with RELAY_LEDGER_SCOPE=owned, the ended entries of request
partitions not held so far are read again from their ledger partition (``backfill``); handed
back (``release``), they are forgotten at the next take that does not take them again.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from service.adapters.kafka_client import client_options
from service.adapters.ledger_checkpoint import CheckpointPlace, CheckpointUnusable
from service.adapters.ledger_codec import decode_end, decode_entry
from service.config import Settings
from service.core.backoff import Backoff
from service.core.ledger import LedgerEntry, LedgerSink, LedgerView
from service.logs import get_logger

_SEGMENT_MS = 6 * 3600 * 1000


async def ensure_ledger_topic(settings: Settings) -> None:
    """Create the ledger topic with compaction when it is missing (RELAY_CREATE_JOBS_TOPIC)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        if settings.relay_jobs_topic in set(await admin.list_topics()):
            return
        replication = settings.relay_jobs_topic_replication
        retention_ms = int(settings.relay_dedupe_retention_s * 1000)
        if replication is None:
            # Like the broker's own internal topics: three copies where there are three brokers.
            cluster = await admin.describe_cluster()
            replication = max(1, min(3, len(cluster.get("brokers", []))))
        topic = NewTopic(
            settings.relay_jobs_topic,
            num_partitions=settings.relay_jobs_topic_partitions,
            replication_factor=replication,
            topic_configs={
                "cleanup.policy": "compact,delete",
                "retention.ms": str(retention_ms),
                "min.compaction.lag.ms": "0",
                # The cleaner never compacts the active segment, which by Kafka's default rolls
                # after 7 days: a week of intent, submitted and finished entries would all stay,
                # three records a job for every start to read. Rolled every 6 hours and cleaned
                # at a tenth dirty, the ledger stays near one record a request.
                "segment.ms": str(min(retention_ms, _SEGMENT_MS)),
                "min.cleanable.dirty.ratio": "0.1",
            },
        )
        try:
            await admin.create_topics([topic])
        except TopicAlreadyExistsError:
            return  # another replica won the race
        get_logger().info("ledger_topic_created", topic=settings.relay_jobs_topic)
    finally:
        await admin.close()


class LedgerMissing(Exception):
    """The ledger topic does not exist and the relay may not create it."""


class KafkaLedger:
    """Reads the whole ledger topic (read_committed) into a sink (the relay's ``LedgerView``)
    and follows it."""

    def __init__(
        self,
        settings: Settings,
        view: LedgerSink,
        writer: str,
        checkpoint: CheckpointPlace | None = None,
    ) -> None:
        self._topic = settings.relay_jobs_topic
        self._view = view
        # A checkpoint is the relay's (a LedgerView's), never a tool's.
        assert checkpoint is None or isinstance(view, LedgerView)
        self._checkpoint = checkpoint
        self._slim = isinstance(view, LedgerView)
        self._released: set[tuple[str, int]] = set()
        self._backfilling = 0
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._ready = False
        self.records_read = 0
        self._writer = writer
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._ends: AIOKafkaConsumer | None = None
        self._parts: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger()
        self.bad_records = 0

    async def start(self) -> None:
        """Connect, then read the ledger to its end."""
        await self.connect()
        await self.read()

    async def connect(self) -> None:
        """Connect to Kafka and find the ledger's partitions (quick, or a setting is wrong)."""
        self._consumer = consumer = self._reader()
        # The high watermark, not the last stable offset: see catch_up().
        self._ends = ends = AIOKafkaConsumer(
            isolation_level="read_uncommitted", **client_options(self._settings)
        )
        try:
            await consumer.start()
            await ends.start()
            partitions = await self._partitions()
        except BaseException:
            await consumer.stop()
            await ends.stop()
            raise
        self._parts = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(self._parts)

    async def read(self) -> None:
        """Read the ledger into the view up to its end (from a checkpoint when one is set and
        trusted), then follow it. Minutes for millions of entries read whole (README "How much
        a replica holds"): bounded by the caller's patience, not a connect timeout."""
        consumer = self._c
        began, cpu = time.monotonic(), time.process_time()
        source = "topic"
        start_at = await self._restore(len(self._parts)) if self._checkpoint else None
        if start_at is not None:
            source = "checkpoint"
        for tp in self._parts:
            offset = (start_at or {}).get(tp.partition, 0)
            consumer.seek(tp, offset)
            self._positions[tp] = offset
        self._task = asyncio.create_task(self._follow(), name="ledger-follow")
        await self.catch_up()
        self._ready = True
        self._log.info(
            "ledger_ready",
            source=source,
            entries=len(self._view) if isinstance(self._view, LedgerView) else None,
            records_read=self.records_read,
            seconds=round(time.monotonic() - began, 3),
            cpu_seconds=round(time.process_time() - cpu, 3),
        )
        if self._checkpoint is not None:
            self._checkpoint_task = asyncio.create_task(
                self._checkpoints(self._settings.relay_ledger_checkpoint_interval_s),
                name="ledger-checkpoints",
            )

    async def _restore(self, partitions: int) -> dict[int, int] | None:
        """Load the checkpoint into the view; the positions to read on from, or None (then
        the ledger is read whole)."""
        place = self._checkpoint
        assert place is not None
        assert isinstance(self._view, LedgerView)
        try:
            found = await asyncio.to_thread(place.load, datetime.now(UTC), partitions)
            if found is None:
                return None
            assert self._ends is not None
            ends = await self._ends.end_offsets(self._parts)
            _check_positions(found.positions, {tp.partition: end for tp, end in ends.items()})
            # Its rows are checked before anything is held: a bad file leaves the view new.
            self._view.restore(found.snapshot)
        except (CheckpointUnusable, ValueError) as exc:
            self._log.warning("ledger_checkpoint_ignored", path=str(place.path), reason=str(exc))
            return None
        self._log.info(
            "ledger_checkpoint_loaded",
            path=str(place.path),
            written_at=found.written_at.isoformat(),
            entries=len(self._view),
        )
        return found.positions

    async def save_checkpoint(self) -> None:
        """Write a checkpoint of the view as of the positions read (off the event loop)."""
        place = self._checkpoint
        if place is None or not self._ready:
            return
        if self._backfilling:
            # The view holds a partition whose ended entries are half read: a checkpoint of it
            # would say they are all there. The next interval (or none) will do.
            self._log.info("ledger_checkpoint_skipped", reason="backfill in progress")
            return
        assert isinstance(self._view, LedgerView)
        # Taken between two awaits: every record before these positions is in the view.
        positions = {tp.partition: self._positions.get(tp, 0) for tp in self._parts}
        snapshot = self._view.snapshot()
        began = time.monotonic()
        size = await asyncio.to_thread(place.save, snapshot, positions, datetime.now(UTC))
        self._log.info(
            "ledger_checkpoint_saved",
            entries=len(self._view),
            bytes=size,
            seconds=round(time.monotonic() - began, 3),
        )

    async def _checkpoints(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.save_checkpoint()
            except OSError as exc:
                self._log.warning("ledger_checkpoint_failed", error=repr(exc))

    async def _partitions(self) -> set[int]:
        """The ledger's partitions; a topic created a moment ago takes a little while to show
        up in the metadata, so wait for it (a few seconds) before calling it missing."""
        admin = AIOKafkaAdminClient(**client_options(self._settings))
        await admin.start()
        try:
            for _attempt in range(50):
                (topic,) = await admin.describe_topics([self._topic])
                partitions = {int(p["partition"]) for p in topic.get("partitions", [])}
                if topic.get("error_code", 0) == 0 and partitions:
                    return partitions
                await asyncio.sleep(0.2)
        finally:
            await admin.close()
        raise LedgerMissing(
            f"the ledger topic {self._topic} does not exist (RELAY_CREATE_JOBS_TOPIC=false?)"
        )

    def _reader(self) -> AIOKafkaConsumer:
        """A reader of the ledger as the view must see it: committed entries only, from the
        start of a partition unless told otherwise, no group, no commits."""
        return AIOKafkaConsumer(
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            **client_options(self._settings),
        )

    @property
    def _c(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "start() first"
        return self._consumer

    async def stop(self) -> None:
        for task in (self._checkpoint_task, self._task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._ready = False  # the follower failed: the view may be behind its positions
        try:
            await self.save_checkpoint()  # a restart reads only what comes after
        except OSError as exc:
            self._log.warning("ledger_checkpoint_failed", error=repr(exc))
        if self._consumer is not None:
            await self._consumer.stop()
        if self._ends is not None:
            await self._ends.stop()

    async def catch_up(self) -> None:
        """Wait until every ledger record written so far is in the view.

        "So far" is the high watermark, not the last stable offset a read_committed reader is
        told: a replica killed inside a transaction leaves it open until the broker aborts it
        (our transaction timeout, 15 s), and entries other replicas committed behind it stay
        invisible until then. Deciding before that would resubmit those jobs; so a takeover
        waits, at most that long, for the transaction to be resolved.
        """
        assert self._ends is not None
        ends = await self._ends.end_offsets(self._parts)
        async with self._progress:
            await self._progress.wait_for(lambda: self._reached(ends))

    async def take(self, sources: set[tuple[str, int]]) -> None:
        """Partitions taken over: their ended entries are held from now on (with
        RELAY_LEDGER_SCOPE=owned, read again from their ledger partitions), and the view is
        caught up."""
        view = self._view
        if isinstance(view, LedgerView):
            view.release(self._released - sources)
            self._released -= sources
            new = view.hold(sources)
            if new:
                self._backfilling += 1
                try:
                    await self._backfill(view, {p % len(self._parts) for _t, p in new})
                except BaseException:
                    # Not held until read whole: the caller's retry reads them again.
                    view.release(new)
                    raise
                finally:
                    self._backfilling -= 1
        await self.catch_up()

    def release(self, sources: set[tuple[str, int]]) -> None:
        """Partitions handed back: their ended entries are forgotten at the next ``take``
        unless it takes them again (a rebalance revokes every partition before it assigns
        them: one kept is not read again)."""
        self._released |= sources

    async def _backfill(self, view: LedgerView, ledger_partitions: set[int]) -> None:
        """Read these ledger partitions from their start to their end now into the view's
        ``backfill`` (what the follower skipped before they were held)."""
        began = time.monotonic()
        parts = [TopicPartition(self._topic, p) for p in sorted(ledger_partitions)]
        reader = self._reader()
        await reader.start()
        read = 0
        try:
            assert self._ends is not None
            ends = await self._ends.end_offsets(parts)
            reader.assign(parts)
            for tp in parts:
                reader.seek(tp, 0)
            while [tp for tp, end in ends.items() if await reader.position(tp) < end]:
                batches = await reader.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        read += 1
                        decoded = self._decode(record.key, record.value)
                        if decoded is not None:
                            view.backfill(*decoded)
        finally:
            await reader.stop()
        self._log.info(
            "ledger_backfilled",
            ledger_partitions=sorted(ledger_partitions),
            records_read=read,
            seconds=round(time.monotonic() - began, 3),
        )

    def _reached(self, ends: dict[TopicPartition, int]) -> bool:
        if self._task is not None and self._task.done():
            self._task.result()  # surfaces the follower's failure to the waiter
        return all(self._positions.get(tp, 0) >= end for tp, end in ends.items())

    def written(self, entry: LedgerEntry) -> None:
        self._view.apply(entry.key, entry)

    def expire(self, now: datetime) -> None:
        self._view.expire(now)

    async def _follow(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                await self._follow_once()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                self._log.warning("ledger_follow_failed", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)

    async def _follow_once(self) -> None:
        batches = await self._c.getmany(timeout_ms=200)
        for tp, records in batches.items():
            for record in records:
                self._apply(record.key, record.value)
            if records:
                self._positions[tp] = records[-1].offset + 1
        for tp in self._parts:
            # Past transaction markers and aborted records the position moves on too.
            position = await self._c.position(tp)
            self._positions[tp] = max(self._positions.get(tp, 0), position)
        async with self._progress:
            self._progress.notify_all()

    def _apply(self, raw_key: bytes | None, value: bytes | None) -> None:
        self.records_read += 1
        decoded = self._decode(raw_key, value)
        if decoded is not None:
            self._view.apply(*decoded)

    def _decode(
        self, raw_key: bytes | None, value: bytes | None
    ) -> tuple[str, LedgerEntry | None] | None:
        """The key and entry of a record (None: a tombstone); None for a record without a
        key or one that cannot be read (counted and logged)."""
        if raw_key is None:
            return None
        key = raw_key.decode("utf-8", "replace")
        if value is None:
            return key, None
        try:
            # The relay's view keeps little of an ended entry (nearly every record of a large
            # ledger): those are decoded for what it keeps; a tool's fold gets every field.
            end = decode_end(key, value) if self._slim else None
            return key, end if end is not None else decode_entry(key, value)[0]
        except (ValueError, KeyError, TypeError) as exc:
            self.bad_records += 1
            self._log.warning("ledger_record_unreadable", key=key, error=str(exc))
            return None


def _check_positions(positions: dict[int, int], ends: dict[int, int]) -> None:
    """A position past its partition's end: the topic was deleted and created again."""
    for partition, end in ends.items():
        if positions.get(partition, 0) > end:
            raise CheckpointUnusable(f"partition {partition} ends before its position")
