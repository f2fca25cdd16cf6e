"""The baseline: what a careful user writes instead of lynx-relay, with fal's own client.

An aiokafka consumer feeds ``fal_client.AsyncClient().subscribe(...)`` (submit, then poll status
every 0.1 s, then fetch the result) under an ``asyncio.Semaphore(N)``; each result becomes a
JSON event on the results topic (acks=all), and **after each message** the consumer commits its
partition's offset up to the highest message that is done with every message before it done too
(so a crash never skips an unfinished request: at-least-once, the careful version). A message
that is not JSON or has no ``request_id``/``input`` is logged and skipped (committed): there is
no dead-letter topic. A fal error becomes a ``failed`` event. No ledger: a restart redelivers,
and resubmits, every request that was in flight.

It is run as its own process by ``bench/run.py`` (fal_client reads ``FAL_QUEUE_RUN_HOST`` when it
is imported; ``FAL_KEY`` and ``SSL_CERT_FILE`` come from the environment too)::

    FAL_KEY=... FAL_QUEUE_RUN_HOST=127.0.0.1:8471 SSL_CERT_FILE=ca.pem \\
        python bench/baseline.py --bootstrap 127.0.0.1:9092 --requests-topic r \\
        --results-topic s --group g --concurrency 64

It logs one JSON line per event on stdout: ``baseline_started``, ``result_published`` (with
``request_id`` and ``status``), ``message_skipped``; it stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import fal_client
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

APP = "fal-ai/lynx"


def log(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"ts": time.time(), "event": event, **fields}) + "\n")
    sys.stdout.flush()


@dataclass(slots=True)
class PartitionOffsets:
    """Offsets of one partition taken but not yet committable; the commit point."""

    pending: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    committed: int = -1  # next offset to commit from (-1: nothing committed yet)

    def take(self, offset: int) -> None:
        self.pending.add(offset)
        if self.committed < 0:
            self.committed = offset

    def finish(self, offset: int) -> int | None:
        """Mark done; returns the new commit point if it moved."""
        self.pending.discard(offset)
        self.done.add(offset)
        moved = False
        while self.committed in self.done:
            self.done.discard(self.committed)
            self.committed += 1
            moved = True
        return self.committed if moved else None


class Baseline:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.consumer = AIOKafkaConsumer(
            args.requests_topic,
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
        self.fal = fal_client.AsyncClient()  # the key from FAL_KEY
        self.slots = asyncio.Semaphore(args.concurrency)
        self.offsets: dict[TopicPartition, PartitionOffsets] = {}
        self.commit_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        await self.producer.start()
        try:
            await self.consumer.start()
            try:
                log("baseline_started", concurrency=self.args.concurrency)
                async for message in self.consumer:
                    await self.slots.acquire()
                    tp = TopicPartition(message.topic, message.partition)
                    self.offsets.setdefault(tp, PartitionOffsets()).take(message.offset)
                    task = asyncio.create_task(self.handle(tp, message.offset, message.value))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
            finally:
                for task in list(self.tasks):
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)
                await self.consumer.stop()
        finally:
            await self.producer.stop()
            http = await self.fal._client
            await http.aclose()

    async def handle(self, tp: TopicPartition, offset: int, value: bytes) -> None:
        try:
            try:
                request = json.loads(value)
                request_id = str(request["request_id"])
                arguments = dict(request["input"])
            except (ValueError, KeyError, TypeError) as exc:
                log("message_skipped", offset=offset, error=type(exc).__name__)
            else:
                await self.process(request_id, arguments, request.get("metadata"))
            await self.commit(tp, offset)
        finally:
            self.slots.release()

    async def process(self, request_id: str, arguments: dict[str, Any], metadata: Any) -> None:
        event: dict[str, Any] = {"request_id": request_id, "metadata": metadata}
        try:
            result = await self.fal.subscribe(APP, arguments=arguments)
        except fal_client.FalClientHTTPError as exc:
            event |= {
                "status": "failed",
                "error": {"status_code": exc.status_code, "message": str(exc)[:500]},
            }
        except Exception as exc:  # any failure still gets its event
            event |= {"status": "failed", "error": {"message": repr(exc)[:500]}}
        else:
            event |= {"status": "succeeded", "video": result.get("video"), "seed": result["seed"]}
        await self.producer.send_and_wait(
            self.args.results_topic, json.dumps(event).encode(), key=request_id.encode()
        )
        log("result_published", request_id=request_id, status=event["status"])

    async def commit(self, tp: TopicPartition, offset: int) -> None:
        point = self.offsets[tp].finish(offset)
        if point is not None:
            async with self.commit_lock:
                # Commit the latest point (another task may have moved it while we waited).
                await self.consumer.commit({tp: self.offsets[tp].committed})


async def amain(args: argparse.Namespace) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await Baseline(args).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--requests-topic", required=True)
    parser.add_argument("--results-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    asyncio.run(amain(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
