"""Secret hygiene: with known secret values, every byte the relay writes (stdout, stderr, its
topics, /metrics) and its settings' repr are scanned; the secrets appear nowhere."""

from __future__ import annotations

import httpx
import pytest

from fal_emulator.config import EmulatorConfig
from service.config import load_settings
from tests.conftest import free_port
from tests.integration.conftest import (
    Topics,
    consume,
    consume_all,
    emulator_running,
    produce,
    request,
)
from tests.integration.processes import RelayProcess, relay_env

pytestmark = pytest.mark.kafka

FAL_KEY = "key-id-4711:s3cr3t-fal-value-0815"
WRONG_KEY = "key-id-4711:wr0ng-fal-value-9999"
SASL_PASSWORD = "s3cr3t-sasl-password-2342"


def test_settings_never_show_their_secrets() -> None:
    settings = load_settings(
        {
            "FAL_KEY": FAL_KEY,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "relay",
            "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        }
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert FAL_KEY not in text
        assert SASL_PASSWORD not in text


async def test_no_byte_the_relay_writes_contains_the_fal_key(topics: Topics) -> None:
    """A full run: successes, a dead letter, a fal failure, and a spell with a refused key."""
    port = free_port()
    async with emulator_running(EmulatorConfig(fal_key=FAL_KEY, run_time=(0.05, 0.1))) as fal:
        env = relay_env(
            topics,
            fal.base_url,
            FAL_KEY=FAL_KEY,
            RELAY_HTTP_PORT=str(port),
            RELAY_PROGRESS_TOPIC=f"{topics.requests}-progress",
            RELAY_TOPICS_PARTITIONS="2",  # of the progress topic, which the relay creates
        )
        relay = await RelayProcess(env, "relay").start()
        try:
            await produce(
                topics.bootstrap,
                topics.requests,
                [
                    request("ok-1"),
                    b"{not json",
                    request("bad", "x [emulator:job-error]"),
                ],
            )
            await consume(topics.bootstrap, topics.results, 2)
            fal.reconfigure(fal_key=WRONG_KEY)  # fal now refuses our key
            await produce(topics.bootstrap, topics.requests, [request("waits")])
            await relay.wait_for("fal_key_refused")
            fal.reconfigure(fal_key=FAL_KEY)
            await consume(topics.bootstrap, topics.results, 3)
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            assert await relay.terminate() == 0
            assert relay.proc is not None
            assert relay.proc.stderr is not None
            stderr = (await relay.proc.stderr.read()).decode()
        finally:
            await relay.close()
    written = [metrics, stderr, repr(relay.lines)]
    for topic in (topics.results, topics.dead_letters, topics.jobs, f"{topics.requests}-progress"):
        partitions = {topics.jobs: 3, f"{topics.requests}-progress": 2}.get(topic, 1)
        for record in await consume_all(topics.bootstrap, topic, partitions):
            written.append(repr((record.key, record.value, record.headers)))
    blob = "\n".join(written)
    assert "fal_key_refused" in blob  # the scan did see the refused-key spell
    for secret in (FAL_KEY, WRONG_KEY, FAL_KEY.split(":")[1]):
        assert secret not in blob
