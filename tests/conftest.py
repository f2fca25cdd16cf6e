"""Session-wide fixtures: one real Kafka broker and one S3-compatible object store per test
session (each started only when a test asks for it), and retries without waiting."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import stamina

from tests.object_storage import (
    DEFAULT_CREDENTIAL,
    DEFAULT_IDENTITY,
    S3Server,
    S3ServerError,
    run_script,
)

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(autouse=True)
def _retries_without_waiting() -> Iterator[None]:
    """Backoff waits belong in production, not in a test's wall time; attempts stay ours."""
    with stamina.set_testing(True, attempts=10, cap=True):
        yield


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real single-node Apache Kafka (KRaft) for this session, from scripts/kafka.

    LYNX_TEST_KAFKA_BOOTSTRAP points the tests at a broker that is already running instead.
    """
    given = os.environ.get("LYNX_TEST_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    port = str(free_port())
    folder = str(tmp_path_factory.mktemp("kafka"))
    script = str(ROOT / "scripts" / "kafka")
    started = subprocess.run(  # noqa: S603 - our own script
        [script, "start", "--port", port, "--dir", folder],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if started.returncode != 0:
        pytest.fail(f"could not start Kafka:\n{started.stderr[-4000:]}", pytrace=False)
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(  # noqa: S603
            [script, "stop", "--port", port, "--dir", folder], timeout=90, check=False
        )


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible object store (S3Proxy, filesystem backend) for this session, from
    scripts/s3proxy; started only when a test asks for it, stopped at the session's end.

    ``create_bucket()`` makes a fresh bucket per test; ``stop()``/``start()`` take the server
    down and bring it back on the same port with the same data. LYNX_TEST_S3_ENDPOINT (with
    LYNX_TEST_S3_IDENTITY and LYNX_TEST_S3_CREDENTIAL) points the tests at a server that is
    already running instead; such a server cannot be stopped by the tests.
    """
    given = os.environ.get("LYNX_TEST_S3_ENDPOINT")
    if given:
        yield S3Server(
            endpoint=given,
            identity=os.environ.get("LYNX_TEST_S3_IDENTITY", DEFAULT_IDENTITY),
            credential=os.environ.get("LYNX_TEST_S3_CREDENTIAL", DEFAULT_CREDENTIAL),
        )
        return
    port = free_port()
    folder = tmp_path_factory.mktemp("s3proxy")
    try:
        endpoint = run_script("start", port, folder, DEFAULT_IDENTITY, DEFAULT_CREDENTIAL)
    except S3ServerError as exc:
        pytest.fail(f"could not start S3Proxy:\n{exc}", pytrace=False)
    try:
        yield S3Server(endpoint=endpoint.strip().splitlines()[-1], port=port, folder=folder)
    finally:
        subprocess.run(  # noqa: S603 - our own script
            [str(ROOT / "scripts" / "s3proxy"), "stop", "--port", str(port), "--dir", str(folder)],
            timeout=90,
            check=False,
        )
