"""``lynx-relay run`` as a child process, for the tests that kill it, and a private broker for
the test that restarts one."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port
from tests.integration.conftest import Topics


def relay_env(topics: Topics, fal_url: str, **overrides: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": topics.bootstrap,
        "FAL_QUEUE_URL": fal_url,
        "RELAY_REQUESTS_TOPIC": topics.requests,
        "RELAY_RESULTS_TOPIC": topics.results,
        "RELAY_DEAD_LETTER_TOPIC": topics.dead_letters,
        "RELAY_GROUP_ID": topics.group,
        "RELAY_JOBS_TOPIC": topics.jobs,
        "RELAY_JOBS_TOPIC_PARTITIONS": "3",
        "RELAY_HTTP_PORT": "0",
        "RELAY_POLL_MIN_INTERVAL_S": "0.05",
        "RELAY_POLL_MAX_INTERVAL_S": "0.25",
        "RELAY_COMMIT_INTERVAL_S": "0.2",
        # fal's request history on the same emulator (its Platform API is under /v1).
        "FAL_API_URL": fal_url.rstrip("/") + "/v1",
        "RELAY_RECONCILE_INTERVAL_S": "0.2",
        # The emulator's jobs last fractions of a second: a lost submit that created nothing
        # is sent again after 5 s, not fal's 20 minutes.
        "RELAY_RECONCILE_GIVE_UP_S": "5",
        **overrides,
    }


class RelayProcess:
    """A relay process whose JSON log lines are collected as they come."""

    def __init__(self, env: dict[str, str], name: str = "relay") -> None:
        self.env = env
        self.name = name
        self.lines: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> RelayProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "run",
            env={**os.environ, **self.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        await self.wait_for("relay_started")
        return self

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.lines.append(json.loads(raw))
            self._changed.set()
        self._changed.set()

    def count(self, event: str, **fields: Any) -> int:
        return sum(
            1
            for line in self.lines
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
        )

    async def wait_for(self, event: str, times: int = 1, within: float = 60, **fields: Any) -> None:
        """Until the process has logged ``event`` (with ``fields``) ``times`` times."""
        async with asyncio.timeout(within):
            while self.count(event, **fields) < times:
                assert self.proc is not None
                if self.proc.returncode is not None and self._reader and self._reader.done():
                    raise AssertionError(f"{self.name} exited before {event} x{times}")
                self._changed.clear()
                await self._changed.wait()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def terminate(self, within: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await self.wait(within)

    async def wait(self, within: float = 30) -> int:
        assert self.proc is not None
        async with asyncio.timeout(within):
            code = await self.proc.wait()
            if self._reader is not None:
                await self._reader
        return code

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def listener_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports below Linux's ephemeral range (32768+), like the
    script's controller port: a port a broker binds after it has opened client connections
    (to its own controller) cannot then be taken by one of those connections."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20_000, 32_000)
        if port in ports:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


class PrivateBroker:
    """A broker of one test's own, for a test that stops and restarts it. ``options`` are more
    arguments for ``scripts/kafka start`` (e.g. its security listeners)."""

    def __init__(self, folder: Path, options: Sequence[str] = ()) -> None:
        self.folder = str(folder)
        self.port = str(free_port())
        self.script = str(ROOT / "scripts" / "kafka")
        self.options = tuple(options)

    def _run(self, command: str) -> str:
        extra = self.options if command == "start" else ()
        done = subprocess.run(  # noqa: S603 - our own script
            [self.script, command, "--port", self.port, "--dir", self.folder, *extra],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka {command} failed:\n{done.stderr[-3000:]}")
        return done.stdout.strip()

    async def start(self) -> str:
        return await asyncio.to_thread(self._run, "start")

    async def stop(self) -> None:
        await asyncio.to_thread(self._run, "stop")

    def start_blocking(self) -> str:
        """``start()`` for a module-scoped fixture, which has no event loop."""
        return self._run("start")

    def stop_blocking(self) -> None:
        self._run("stop")
