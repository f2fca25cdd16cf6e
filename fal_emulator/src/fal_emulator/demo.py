"""``fal-emulator demo``: the whole path on one machine, for a newcomer without a FAL_KEY.

Against a running Kafka, it starts the fal queue emulator (``python -m fal_emulator serve``) and
the relay (``python -m service run``, the same command an operator runs) as two processes,
publishes the contract's sample request, prints its result event, and shuts both down the way a
deployment would (SIGTERM). The relay is only ever a process here, never imported.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

SAMPLE_REQUEST: dict[str, Any] = {
    "request_id": "order-8841",
    "input": {
        "image_url": "https://storage.googleapis.com/falserverless/example_inputs/lynx/example_in.png",
        "prompt": (
            "A person carves a pumpkin on a porch in the evening. The camera captures their upper "
            "body as they draw a face with a marker, carefully cut along the lines, then lift the "
            "lid with both hands. Their face lights up with excitement as they peek inside"
        ),
    },
    "metadata": {"tenant": "acme", "anything": ["echoed", "back"]},
}
TOPICS = ("lynx.requests", "lynx.results", "lynx.requests.dlq")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def _wait_http(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


async def _ensure_topics(bootstrap: str) -> int:
    """Create the contract's default topics if missing; the results topic's partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(t, num_partitions=3, replication_factor=1) for t in TOPICS if t not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        (results,) = await admin.describe_topics(["lynx.results"])
        return len(results["partitions"])
    finally:
        await admin.close()


async def _exchange(bootstrap: str, partitions: int, wait_s: float) -> dict[str, Any]:
    """Publish the sample request, return its result event (read from the log end onwards)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        parts = [TopicPartition("lynx.results", p) for p in range(partitions)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        for tp, end in ends.items():
            consumer.seek(tp, end)
        rid = SAMPLE_REQUEST["request_id"]
        await producer.send_and_wait(
            "lynx.requests", json.dumps(SAMPLE_REQUEST).encode(), key=rid.encode()
        )
        _say(f"published request {rid} to lynx.requests; waiting for its result event ...")
        async with asyncio.timeout(wait_s):
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        if record.key == rid.encode() and record.value is not None:
                            event: dict[str, Any] = json.loads(record.value)
                            return event
    finally:
        await consumer.stop()
        await producer.stop()


# scripts/s3proxy's local-only credentials (never a real secret), and the demo's bucket.
DEMO_S3_IDENTITY = "lynx-local"
DEMO_S3_CREDENTIAL = "lynx-local-secret"
DEMO_BUCKET = "demo-videos"


def run_demo(bootstrap: str, *, timeout: float, output_endpoint: str | None = None) -> int:
    partitions = asyncio.run(_ensure_topics(bootstrap))
    emulator_port, relay_port = _free_port(), _free_port()
    emulator = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [
            sys.executable,
            "-m",
            "fal_emulator",
            "serve",
            "--port",
            str(emulator_port),
            "--run-time",
            "2-4",
            "--queue-wait",
            "0.5-1",
        ],
        stdout=sys.stderr,
    )
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "FAL_QUEUE_URL": f"http://127.0.0.1:{emulator_port}",
        # The emulator's Platform API: the relay asks its request history about lost answers.
        "FAL_API_URL": f"http://127.0.0.1:{emulator_port}/v1",
        "RELAY_HTTP_PORT": str(relay_port),
        "RELAY_POLL_MIN_INTERVAL_S": "0.5",
        "RELAY_POLL_MAX_INTERVAL_S": "2",
    }
    env.pop("FAL_KEY", None)
    if output_endpoint is not None:
        # Videos copied to a local S3-compatible store (make demo starts S3Proxy).
        env.update(
            RELAY_OUTPUT_URL=f"s3://{DEMO_BUCKET}/videos/",
            RELAY_OUTPUT_ENDPOINT_URL=output_endpoint,
            RELAY_OUTPUT_REGION="us-east-1",
            AWS_ACCESS_KEY_ID=DEMO_S3_IDENTITY,
            AWS_SECRET_ACCESS_KEY=DEMO_S3_CREDENTIAL,
        )
    relay = subprocess.Popen([sys.executable, "-m", "service", "run"], env=env, stdout=sys.stderr)
    try:
        _wait_http(emulator_port, time.monotonic() + 20)
        _say(f"fal queue emulator on http://127.0.0.1:{emulator_port}")
        _wait_http(relay_port, time.monotonic() + 30)
        _say(f"relay running; metrics on http://127.0.0.1:{relay_port}/metrics")
        event = asyncio.run(_exchange(bootstrap, partitions, timeout))
        print(json.dumps(event, indent=2))
        _say(f"result event for {event['request_id']}: {event['status']}")
        video = event.get("video") or {}
        if video.get("fal_url"):
            _say(
                f"video stored at {video['url']} ({video['file_size']} bytes; fal's copy: "
                f"{video['fal_url']})"
            )
    finally:
        relay.send_signal(signal.SIGTERM)
        code = relay.wait(timeout=30)
        _say(f"relay stopped on SIGTERM with exit code {code}")
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=10)
    return 0 if event["status"] == "succeeded" and code == 0 else 1
