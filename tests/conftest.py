"""Session-wide fixtures: one real Kafka broker per test session (started only when a test
asks for it), and retries without waiting."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import stamina

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
