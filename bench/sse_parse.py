"""CPU per status stream read through ``FalQueue.stream()``: the SSE parsing and our mapping.

One fal status stream as the fal emulator sends it (three IN_QUEUE positions, IN_PROGRESS, a
keep-alive comment, COMPLETED with metrics), each event its own chunk, served by
``httpx.MockTransport`` so no socket or server shares the measured CPU: what is left is httpx's
response machinery, the SSE parsing and ``_status_from``. Process CPU time
(``time.process_time()``) around N streams read one after the other, after a warm-up; the
median of the repetitions, with min-max, in microseconds per stream.

Run (from the project root)::

    uv run python bench/sse_parse.py            # 5,000 streams, 5 repetitions
    uv run python bench/sse_parse.py --quick    # 200 streams, 1 repetition

It prints only; the figures belong in the change that moves them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from service.adapters.fal import FalQueue
from service.core.ledger import FalRef
from service.metrics import RelayMetrics
from service.ports import FalPhase

BASE = "https://queue.fal.test"
URLS = {
    "request_id": "f-1",
    "response_url": f"{BASE}/fal-ai/lynx/requests/f-1",
    "status_url": f"{BASE}/fal-ai/lynx/requests/f-1/status",
    "cancel_url": f"{BASE}/fal-ai/lynx/requests/f-1/cancel",
}
JOB = FalRef(
    request_id="f-1",
    status_url=URLS["status_url"],
    response_url=URLS["response_url"],
    cancel_url=URLS["cancel_url"],
)
STATUSES: list[dict[str, Any]] = [
    *({"status": "IN_QUEUE", "queue_position": n, **URLS} for n in (2, 1, 0)),
    {"status": "IN_PROGRESS", "logs": None, **URLS},
    {"status": "COMPLETED", "logs": None, "metrics": {"inference_time": 12.5}, **URLS},
]
CHUNKS = [f"data: {json.dumps(s)}\n\n".encode() for s in STATUSES]
CHUNKS.insert(4, b": keep-alive\n\n")


async def _body() -> AsyncIterator[bytes]:
    for chunk in CHUNKS:
        yield chunk


def _handler(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=_body())


async def _read(fal: FalQueue, streams: int) -> None:
    for _ in range(streams):
        phases = [status.phase async for status in fal.stream(JOB)]
        if phases[-1] is not FalPhase.COMPLETED or len(phases) != len(STATUSES):
            raise RuntimeError(f"unexpected stream: {phases}")


async def main(streams: int, repetitions: int) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(_handler)) as http:
        fal = FalQueue(http, base_url=BASE, endpoint="fal-ai/lynx", metrics=RelayMetrics())
        await _read(fal, max(streams // 10, 20))  # warm-up
        per_stream_us = []
        for _ in range(repetitions):
            gc.collect()
            before = time.process_time()
            await _read(fal, streams)
            per_stream_us.append((time.process_time() - before) / streams * 1e6)
    med = statistics.median(per_stream_us)
    print(
        f"CPU per status stream ({len(STATUSES)} events, 1 keep-alive): {med:.0f} us "
        f"(min {min(per_stream_us):.0f}, max {max(per_stream_us):.0f}; "
        f"{repetitions} x {streams} streams)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200 streams, 1 repetition")
    args = parser.parse_args()
    asyncio.run(main(200, 1) if args.quick else main(5000, 5))
