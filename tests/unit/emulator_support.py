"""What the emulator's unit tests share: the request they submit, a hand-held simulation, a real
``FalEmulator`` on a free port driven with an authorised ``httpx`` client, and a webhook receiver.

The fixtures are made per test module, which binds them to the names pytest finds them by::

    start_emulator, fal = emulator_fixtures(seed=7)
    start_receiver, receiver = receiver_fixtures()

Nothing here waits on wall-clock sleeps: helpers poll or listen under ``DEADLINE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from fal_emulator import EmulatorConfig, FalEmulator, add_arguments
from fal_emulator.jobs import Job, Simulation

KEY = "key-id:key-secret"
AUTH = {"Authorization": f"Key {KEY}"}
BODY: dict[str, Any] = {
    "image_url": "https://images.example.com/subject.png",
    "prompt": "a person waving at the camera",
}
HOLD = "[emulator:run=30]"  # keeps a job running until the test cancels it or the server stops
DEADLINE = 3.0


def body(prompt_suffix: str = "", **fields: Any) -> dict[str, Any]:
    return {**BODY, "prompt": f"{BODY['prompt']} {prompt_suffix}".strip(), **fields}


def emulator_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emulator")
    add_arguments(parser)
    return parser


# --- the pure simulation ---------------------------------------------------------------------


def simulation(**overrides: Any) -> Simulation:
    config = EmulatorConfig(**{"run_time": (1.0, 1.0), "seed": 1, **overrides})
    return Simulation(config, random.Random(config.seed))


def submit_job(
    sim: Simulation, now: float, payload: dict[str, Any] | None = None, **options: Any
) -> Job:
    """Submit ``payload`` (a copy of BODY by default) at ``now``; ``options`` override or add to
    the arguments of ``Simulation.submit`` (``low_priority``, ``webhook``, ``start_timeout``...)."""
    request_id = options.pop("request_id", f"req-{sim.counters.submissions + 1}")
    arguments: dict[str, Any] = {
        "now": now,
        "wall": 1_700_000_000.0 + now,
        "request_id": request_id,
        "gateway_request_id": f"gw-{request_id}",
        "endpoint": "fal-ai/lynx",
        "subpath": None,
        "body": dict(BODY) if payload is None else payload,
        "headers_recorded": {},
        "webhook": None,
        "low_priority": False,
        **options,
    }
    job, _ = sim.submit(**arguments)
    return job


# --- the HTTP server -------------------------------------------------------------------------


@dataclass
class Harness:
    """A running emulator and a client that sends the key with every call."""

    emulator: FalEmulator
    client: httpx.AsyncClient
    base_url: str

    async def submit(
        self, payload: Any = None, *, webhook: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Submit ``payload`` (BODY by default), with ``?fal_webhook=`` when given a webhook."""
        if webhook is not None:
            kwargs["params"] = {"fal_webhook": webhook}
        response = await self.client.post(
            "/fal-ai/lynx", json=BODY if payload is None else payload, **kwargs
        )
        assert response.status_code == 200, response.text
        submitted: dict[str, Any] = response.json()
        return submitted

    async def wait_for(self, status_url: str, state: str = "COMPLETED") -> dict[str, Any]:
        """Poll until ``state``, passing over injected 429s as a client would."""
        async with asyncio.timeout(DEADLINE):
            while True:
                response = await self.client.get(status_url)
                if response.status_code != 429:
                    status: dict[str, Any] = response.json()
                    if status["status"] == state:
                        return status
                await asyncio.sleep(0.005)

    async def final_status(self, status_url: str) -> dict[str, Any]:
        """The last event of the status stream, which the server closes after COMPLETED: the
        server wakes itself, the test only listens."""
        last: dict[str, Any] = {}
        async with asyncio.timeout(DEADLINE):
            async with self.client.stream("GET", f"{status_url}/stream") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        last = json.loads(line.removeprefix("data: "))
        return last

    async def completed(self, submitted: dict[str, Any]) -> None:
        """Wait for the job to complete: its status stream ends after the COMPLETED event."""
        final = await self.final_status(submitted["status_url"])
        assert final["status"] == "COMPLETED", final

    async def status(self, status_url: str) -> dict[str, Any]:
        status: dict[str, Any] = (await self.client.get(status_url)).json()
        return status

    async def stats(self, **params: Any) -> dict[str, Any]:
        stats: dict[str, Any] = (await self.client.get("/_emulator/stats", params=params)).json()
        return stats

    def jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self.emulator.stats(include_jobs=True)["jobs"]
        return jobs

    def job(self, request_id: str) -> dict[str, Any]:
        (job,) = [job for job in self.jobs() if job["request_id"] == request_id]
        return job

    async def jwks(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as bare:  # no key needed
            response = await bare.get(self.emulator.jwks_url)
        assert response.status_code == 200, response.text
        jwks: dict[str, Any] = response.json()
        return jwks


StartEmulator = Callable[..., Awaitable[Harness]]


def emulator_fixtures(**defaults: Any) -> tuple[object, object]:
    """The fixtures ``start_emulator`` and ``fal``, for one test module.

    ``start_emulator(**overrides)`` starts an emulator whose jobs run 0.01-0.03 s and that wants
    KEY, with the module's ``defaults`` and then ``overrides`` on top; every one it started is
    stopped at teardown. ``fal`` is one started with the defaults alone.
    """

    @pytest.fixture
    async def start_emulator() -> AsyncIterator[StartEmulator]:
        harnesses: list[Harness] = []

        async def start(**overrides: Any) -> Harness:
            config = EmulatorConfig(
                **{"run_time": (0.01, 0.03), "fal_key": KEY, **defaults, **overrides}
            )
            emulator = FalEmulator(config)
            base_url = await emulator.start()
            client = httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=DEADLINE)
            harnesses.append(Harness(emulator, client, base_url))
            return harnesses[-1]

        yield start
        for harness in harnesses:
            await harness.client.aclose()
            await harness.emulator.stop()

    @pytest.fixture
    async def fal(start_emulator: StartEmulator) -> Harness:
        return await start_emulator()

    return start_emulator, fal


# --- a webhook receiver, as the relay would be -----------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.raw)
        return body


@dataclass
class Receiver:
    """Records every POST; answers the queued statuses in turn, then 200."""

    url: str
    answers: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(dict(request.headers), await request.read()))
        self.arrived.set()
        status = self.answers.pop(0) if self.answers else 200
        return web.json_response({"ok": status < 300}, status=status)

    async def wait_for(self, count: int) -> list[Received]:
        async with asyncio.timeout(DEADLINE):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received


StartReceiver = Callable[..., Awaitable[Receiver]]


def receiver_fixtures() -> tuple[object, object]:
    """The fixtures ``start_receiver`` and ``receiver``, for one test module (bind both:
    ``receiver`` asks for ``start_receiver``).

    ``start_receiver(answers)`` runs a ``Receiver`` on a free port, stopped at teardown;
    ``receiver`` is one that answers 200 to everything.
    """

    @pytest.fixture
    async def start_receiver() -> AsyncIterator[StartReceiver]:
        runners: list[web.AppRunner] = []

        async def start(answers: list[int] | None = None) -> Receiver:
            receiver = Receiver(url="", answers=list(answers or []))
            app = web.Application()
            app.router.add_post("/fal/webhook", receiver.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            # A query string, to show the URL survives its own encoding in ?fal_webhook=.
            receiver.url = f"http://127.0.0.1:{port}/fal/webhook?source=emulator&n=1"
            return receiver

        yield start
        for runner in runners:
            await runner.cleanup()

    @pytest.fixture
    async def receiver(start_receiver: StartReceiver) -> Receiver:
        return await start_receiver()

    return start_receiver, receiver
