"""Kafka security against a real broker: one private broker for this module with an SSL, a
mutual-TLS, a SASL_PLAINTEXT and a SASL_SSL listener (certificates made here with trustme,
SCRAM users written when its storage is formatted). The relay processes a request end to end
over each, and a wrong SASL password stops ``lynx-relay run`` at start with exit code 2 and one
line on stderr, without a retry storm and without ever showing the password.

The test's own producer and consumer use the broker's PLAINTEXT listener."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context
from cryptography.hazmat.primitives import serialization

from fal_emulator.config import EmulatorConfig
from tests.integration.conftest import (
    consume,
    create_topics,
    emulator_running,
    events,
    produce,
    relay_running,
    relay_settings,
    request,
)
from tests.integration.processes import PrivateBroker, listener_ports

pytestmark = pytest.mark.kafka

USER = "lynx-relay"
PASSWORD = "relay-pw.S3cret-7f1c"
WRONG_PASSWORD = "wrong-pw.Z9q-4411"


@dataclass(frozen=True)
class SecureKafka:
    plaintext: str  # bootstrap address of each listener
    ssl: str
    mtls: str  # SSL with ssl.client.auth=required
    sasl: str  # SASL_PLAINTEXT: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_ssl: str
    ca: str  # PEM files
    client_cert: str
    client_key: str


def write_certificates(folder: Path) -> dict[str, str]:
    """A CA, the broker's certificate for 127.0.0.1/localhost and a client certificate."""
    folder.mkdir()
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("lynx-relay.client.test")
    files = {
        name: str(folder / name)
        for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    }
    ca.cert_pem.write_to_path(files["ca.pem"])
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(files["server.pem"], append=i > 0)
    # The broker reads only unencrypted PKCS#8 keys; trustme writes the traditional format.
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    Path(files["server.key"]).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for i, blob in enumerate(client.cert_chain_pems):
        blob.write_to_path(files["client.pem"], append=i > 0)
    client.private_key_pem.write_to_path(files["client.key"])
    return files


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    folder = tmp_path_factory.mktemp("secure-kafka")
    files = write_certificates(folder / "certs")
    ssl, mtls, sasl, sasl_ssl = listener_ports(4)
    broker = PrivateBroker(
        folder / "kafka",
        options=[
            f"--ssl-port={ssl}",
            f"--mtls-port={mtls}",
            f"--sasl-port={sasl}",
            f"--sasl-ssl-port={sasl_ssl}",
            f"--ssl-cert={files['server.pem']}",
            f"--ssl-key={files['server.key']}",
            f"--ssl-ca={files['ca.pem']}",
            f"--sasl-user={USER}:{PASSWORD}",
        ],
    )
    try:
        plaintext = broker.start_blocking()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield SecureKafka(
            plaintext=plaintext,
            ssl=f"127.0.0.1:{ssl}",
            mtls=f"127.0.0.1:{mtls}",
            sasl=f"127.0.0.1:{sasl}",
            sasl_ssl=f"127.0.0.1:{sasl_ssl}",
            ca=files["ca.pem"],
            client_cert=files["client.pem"],
            client_key=files["client.key"],
        )
    finally:
        broker.stop_blocking()


def kafka_env(
    kafka: SecureKafka,
    protocol: str,
    mechanism: str | None = None,
    *,
    mutual: bool = False,
    password: str = PASSWORD,
) -> dict[str, str]:
    """The relay's KAFKA_* settings for one listener of ``kafka``."""
    bootstrap = {
        "SSL": kafka.mtls if mutual else kafka.ssl,
        "SASL_PLAINTEXT": kafka.sasl,
        "SASL_SSL": kafka.sasl_ssl,
    }[protocol]
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_SECURITY_PROTOCOL": protocol}
    if protocol.endswith("SSL"):
        env["KAFKA_SSL_CAFILE"] = kafka.ca
    if mutual:
        env["KAFKA_SSL_CERTFILE"] = kafka.client_cert
        env["KAFKA_SSL_KEYFILE"] = kafka.client_key
    if mechanism is not None:
        env["KAFKA_SASL_MECHANISM"] = mechanism
        env["KAFKA_SASL_USERNAME"] = USER
        env["KAFKA_SASL_PASSWORD"] = password
    return env


@pytest.mark.parametrize(
    ("protocol", "mechanism", "mutual"),
    [
        pytest.param("SSL", None, False, id="ssl-cafile"),
        pytest.param("SSL", None, True, id="ssl-mutual-tls"),
        pytest.param("SASL_PLAINTEXT", "PLAIN", False, id="sasl_plaintext-plain"),
        pytest.param("SASL_PLAINTEXT", "SCRAM-SHA-256", False, id="sasl_plaintext-scram-sha-256"),
        pytest.param("SASL_PLAINTEXT", "SCRAM-SHA-512", False, id="sasl_plaintext-scram-sha-512"),
        pytest.param("SASL_SSL", "SCRAM-SHA-512", False, id="sasl_ssl-scram-sha-512"),
        pytest.param("SASL_SSL", "PLAIN", False, id="sasl_ssl-plain"),
    ],
)
async def test_the_relay_processes_a_request_over_a_secured_listener(
    secure_kafka: SecureKafka, protocol: str, mechanism: str | None, mutual: bool
) -> None:
    """Ledger topic creation, the transactional producer, the ledger reader and the group
    consumer all go through the secured listener; the test reads the result over PLAINTEXT."""
    topics = await create_topics(secure_kafka.plaintext)
    env = kafka_env(secure_kafka, protocol, mechanism, mutual=mutual)
    rid = f"secure-{protocol}-{mechanism}-{mutual}".lower()
    async with emulator_running(EmulatorConfig(run_time=(0.05, 0.05))) as fal:
        async with relay_running(relay_settings(topics, fal.base_url, **env)):
            await produce(topics.bootstrap, topics.requests, [request(rid)])
            got = events(await consume(topics.bootstrap, topics.results, 1, within=30))
    assert got[rid]["status"] == "succeeded"
    assert got[rid]["video"]["url"]


async def test_the_mutual_tls_listener_refuses_a_client_without_a_certificate(
    secure_kafka: SecureKafka,
) -> None:
    """So the mutual-TLS case above did authenticate with its client certificate."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=secure_kafka.mtls,
        security_protocol="SSL",
        ssl_context=create_ssl_context(cafile=secure_kafka.ca),
    )
    try:
        with pytest.raises(KafkaConnectionError):
            await admin.start()
    finally:
        await admin.close()


WRONG_PASSWORD_CASES = [
    ("SASL_PLAINTEXT", "PLAIN"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ("SASL_SSL", "SCRAM-SHA-512"),
]


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    took: float


@pytest.fixture(scope="module")
def wrong_password_runs(secure_kafka: SecureKafka) -> dict[str, Run]:
    """``lynx-relay run`` with a wrong SASL password, once per case, all at once."""
    started: dict[str, tuple[subprocess.Popen[str], float]] = {}
    for protocol, mechanism in WRONG_PASSWORD_CASES:
        env = {
            **kafka_env(secure_kafka, protocol, mechanism, password=WRONG_PASSWORD),
            "FAL_QUEUE_URL": "http://127.0.0.1:9",
            "RELAY_HTTP_HOST": "127.0.0.1",
            "RELAY_HTTP_PORT": "0",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "run"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[mechanism] = (proc, time.monotonic())
    runs: dict[str, Run] = {}
    for mechanism, (proc, t0) in started.items():
        try:
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        runs[mechanism] = Run(proc.returncode, stdout, stderr, time.monotonic() - t0)
    return runs


@pytest.mark.parametrize("mechanism", [m for _, m in WRONG_PASSWORD_CASES])
def test_a_wrong_sasl_password_stops_the_relay_at_start_with_exit_code_2(
    wrong_password_runs: dict[str, Run], mechanism: str
) -> None:
    run = wrong_password_runs[mechanism]
    assert run.code == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("lynx-relay: ")
    assert "Traceback" not in run.stderr
    # No retry storm: it gives up at once (start-up's own limit is 30 s) and logs little.
    assert run.took < 15
    logged = run.stdout.splitlines()
    assert len(logged) <= 3, run.stdout
    for line in logged:
        json.loads(line)
    for secret in (WRONG_PASSWORD, PASSWORD):
        assert secret not in run.stdout
        assert secret not in run.stderr


@pytest.mark.parametrize("mechanism", [m for _, m in WRONG_PASSWORD_CASES])
def test_the_wrong_password_line_names_the_problem(
    wrong_password_runs: dict[str, Run], mechanism: str
) -> None:
    line = wrong_password_runs[mechanism].stderr.strip()
    assert "authentication" in line.lower(), line
    assert "KAFKA_SASL" in line, line
