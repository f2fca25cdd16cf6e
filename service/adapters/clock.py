"""The real clock behind the ``Clock`` port: the one place the relay's waits meet asyncio's
own clock (``asyncio.timeout``, ``asyncio.wait``), so a fake clock can drive every one of them
in unit tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def timeout(self, seconds: float | None) -> AbstractAsyncContextManager[Any]:
        return asyncio.timeout(seconds)

    async def wait(
        self, tasks: Iterable[asyncio.Future[Any]], within: float | None
    ) -> set[asyncio.Future[Any]]:
        waiting = set(tasks)
        if not waiting:
            return set()
        _done, pending = await asyncio.wait(waiting, timeout=within)
        return pending
