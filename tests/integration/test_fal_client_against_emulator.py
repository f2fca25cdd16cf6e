"""Proof that the emulator speaks fal: the official ``fal_client`` (1.0.3), unmodified, against it.

fal_client only speaks https to ``FAL_QUEUE_RUN_HOST``, so the emulator serves TLS with a
certificate for 127.0.0.1/localhost from a throwaway ``trustme`` CA. httpx 0.28 (under fal_client)
builds its SSL context from ``SSL_CERT_FILE`` when that variable is set, so pointing it at the CA
is all the client needs; nothing in fal_client is patched for TLS or auth (``FAL_KEY``).

One wrinkle: fal_client reads ``FAL_QUEUE_RUN_HOST`` once, when it is first imported, into the
module constant ``fal_client.client.QUEUE_URL_FORMAT``. In this process it is long imported, so the
in-process tests set the variable *and* that constant. The subprocess test imports fal_client
fresh with nothing but environment variables, proving the documented configuration path too.

If these pass, fal's own client can submit (with priority, hint, start timeout, webhook and
subpath), poll status with and without logs, fetch results through both the server-given URLs and
the URLs it builds itself, cancel, and it reads our errors the way it reads fal's (no retries of
responses that carry ``x-fal-request-id``).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fal_client
import fal_client.client
import pytest
import trustme

from fal_emulator import EmulatorConfig, FalEmulator

KEY = "emulator-key-id:emulator-key-secret"
APP = "fal-ai/lynx"
BODY: dict[str, Any] = {
    "image_url": "https://images.example.com/subject.png",
    "prompt": "a person waving at the camera",
    "num_frames": 33,
    "frames_per_second": 16,
    "seed": 11,
}
DEADLINE = 10.0


def body(prompt_suffix: str = "", **fields: Any) -> dict[str, Any]:
    return {**BODY, "prompt": f"{BODY['prompt']} {prompt_suffix}".strip(), **fields}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """The server's TLS context; the client trusts its CA through ``SSL_CERT_FILE``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path / "emulator-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    return context


@dataclass
class Fal:
    emulator: FalEmulator
    client: Any  # fal_client.AsyncClient; fal_client ships no type information mypy reads
    host: str


StartFal = Callable[..., Awaitable[Fal]]


@pytest.fixture
async def start_fal(
    server_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StartFal]:
    started: list[Fal] = []

    async def start(**overrides: Any) -> Fal:
        config = EmulatorConfig(**{"run_time": (0.02, 0.05), "fal_key": KEY, **overrides})
        emulator = FalEmulator(config)
        base_url = await emulator.start("127.0.0.1", 0, ssl_context=server_tls)
        host = base_url.removeprefix("https://")
        monkeypatch.setenv("FAL_KEY", KEY)
        monkeypatch.setenv("FAL_QUEUE_RUN_HOST", host)
        monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT", f"https://{host}/")
        started.append(Fal(emulator, fal_client.AsyncClient(), host))  # key from FAL_KEY
        return started[-1]

    yield start
    for fal in started:
        # fal_client never closes the httpx client it caches; close it so no socket leaks.
        http = await fal.client._client
        await http.aclose()
        await fal.emulator.stop()


def assert_lynx_video(result: dict[str, Any], host: str, num_frames: int = 33) -> None:
    video = result["video"]
    assert video["url"].startswith(f"https://{host}/_emulator/files/")
    assert video["content_type"] == "video/mp4"
    assert (video["width"], video["height"], video["fps"]) == (1280, 720, 16)
    assert (video["num_frames"], video["duration"]) == (num_frames, num_frames / 16)
    assert result["seed"] == 11


async def test_subscribe_returns_the_lynx_video(start_fal: StartFal) -> None:
    """``AsyncClient.subscribe``: submit, poll status with logs to COMPLETED, fetch the result."""
    fal = await start_fal()
    enqueued: list[str] = []
    updates: list[fal_client.Status] = []
    async with asyncio.timeout(DEADLINE):
        result = await fal.client.subscribe(
            APP,
            arguments=BODY,
            with_logs=True,
            on_enqueue=enqueued.append,
            on_queue_update=updates.append,
        )
    assert_lynx_video(result, fal.host)
    (request_id,) = enqueued
    assert request_id in result["video"]["url"]
    completed = updates[-1]
    assert isinstance(completed, fal_client.Completed)
    assert completed.error is None
    assert completed.metrics["inference_time"] > 0
    assert completed.logs
    stats = fal.emulator.stats()
    assert (stats["submissions"], stats["in_flight"], stats["succeeded"]) == (1, 0, 1)


async def test_submit_status_result_cancel(start_fal: StartFal) -> None:
    """The handle API and the by-id API (whose URLs fal_client builds itself) on one slot."""
    fal = await start_fal(max_concurrent=1)
    client = fal.client
    async with asyncio.timeout(DEADLINE):
        running = await client.submit(APP, arguments=body("[emulator:run=30]"))
        queued = await client.submit(APP, arguments=BODY)

        queued_status = await queued.status()
        assert queued_status == fal_client.Queued(position=0)
        assert isinstance(await running.status(with_logs=True), fal_client.InProgress)
        by_id = await client.status(APP, running.request_id, with_logs=True)
        assert isinstance(by_id, fal_client.InProgress)
        assert by_id.logs is not None

        await queued.cancel()
        cancelled = await queued.status()
        assert isinstance(cancelled, fal_client.Completed)
        assert cancelled.error_type == "client_cancelled"

        await client.cancel(APP, running.request_id)  # by id: fal_client builds the cancel URL
        assert (await running.status()).error_type == "client_cancelled"

        fast = await client.submit(APP, arguments=BODY)
        assert_lynx_video(await fast.get(), fal.host)
        # The by-id result route, on a fresh job.
        again = await client.submit(APP, arguments=BODY)
        assert_lynx_video(await client.result(APP, again.request_id), fal.host)

    stats = fal.emulator.stats()
    assert stats["cancelled"] == 2
    assert stats["peak_running"] == 1


async def test_errors_reach_fal_client_as_fal_errors_without_retries(start_fal: StartFal) -> None:
    fal = await start_fal()
    cases = [
        (body(num_frames=500), 422, None),
        (body(image_url="https://cdn.example.invalid/face.png"), 422, None),
        (body("[emulator:job-error]"), 503, "runner_disconnected"),
        (body("[emulator:result-500]"), 500, None),
    ]
    async with asyncio.timeout(DEADLINE):
        for arguments, status_code, error_type in cases:
            with pytest.raises(fal_client.FalClientHTTPError) as raised:
                await fal.client.subscribe(APP, arguments=arguments)
            assert raised.value.status_code == status_code
            assert raised.value.error_type == error_type
    stats = fal.emulator.stats()
    # One result GET per job: fal_client did not retry the 503 or the 500 (x-fal-request-id).
    assert stats["calls"]["result"]["total"] == len(cases)
    assert stats["calls"]["submit"]["total"] == len(cases)


async def test_a_wrong_key_is_a_401(start_fal: StartFal) -> None:
    await start_fal()
    wrong = fal_client.AsyncClient(key="not-the-key")
    try:
        with pytest.raises(fal_client.FalClientHTTPError) as raised:
            await wrong.submit(APP, arguments=BODY)
        assert raised.value.status_code == 401
    finally:
        await (await wrong._client).aclose()


async def test_submit_options_are_recorded(start_fal: StartFal) -> None:
    fal = await start_fal()
    webhook = "https://hooks.example.com/fal?job=1"
    handle = await fal.client.submit(
        APP,
        arguments=BODY,
        path="/v1",
        hint="lynx-warm",
        webhook_url=webhook,
        priority="low",
        start_timeout=30,
    )
    (record,) = fal.emulator.stats(include_jobs=True)["jobs"]
    assert record["request_id"] == handle.request_id
    assert record["subpath"] == "v1"
    assert record["webhook"] == webhook
    assert record["low_priority"] is True
    assert record["headers_recorded"] == {
        "X-Fal-Queue-Priority": "low",
        "X-Fal-Runner-Hint": "lynx-warm",
        "X-Fal-Request-Timeout": "30.0",
    }
    async with asyncio.timeout(DEADLINE):
        assert_lynx_video(await handle.get(), fal.host)


_SYNC_SUBSCRIBE = """
import json, sys
import fal_client
print(json.dumps(fal_client.subscribe(sys.argv[1], arguments=json.loads(sys.argv[2]))))
"""


async def test_sync_client_configured_only_by_environment(start_fal: StartFal) -> None:
    """A fresh process with FAL_QUEUE_RUN_HOST, FAL_KEY and SSL_CERT_FILE: the documented setup."""
    fal = await start_fal()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SYNC_SUBSCRIBE,
        APP,
        json.dumps(BODY),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(DEADLINE):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert_lynx_video(json.loads(stdout), fal.host)
    assert fal.emulator.stats()["submissions"] == 1
