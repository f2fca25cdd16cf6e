"""The installed command as an operator runs it: settings errors, start-up failures, JSON logs
on stdout, and a clean exit on SIGTERM with jobs still running at fal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from fal_emulator.config import EmulatorConfig
from service.config import Settings
from tests.conftest import free_port
from tests.integration.conftest import (
    Topics,
    committed_and_end,
    consume,
    emulator_running,
    events,
    produce,
    request,
)
from tests.integration.processes import RelayProcess, relay_env

SECRET_KEY = "fal-key-id:very-secret-value-4711"


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "service", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_lists_the_sub_commands() -> None:
    """The relay's command is the product's: run, spend and schemas. The fal emulator and the demo
    are the development package's (``fal-emulator``), not sub-commands of the relay."""
    out = run_cli("--help", env={})
    assert out.returncode == 0
    for command in ("run", "spend", "schemas"):
        assert command in out.stdout
    for moved in ("emulator", "demo"):
        refused = run_cli(moved, "--help", env={})
        assert refused.returncode == 2
        assert "invalid choice" in refused.stderr


def test_version_and_every_setting_in_run_help() -> None:
    version = run_cli("--version", env={})
    assert version.returncode == 0
    assert version.stdout.strip() == "lynx-relay 0.1.0"
    helped = run_cli("run", "--help", env={})
    assert helped.returncode == 0
    for name in Settings.model_fields:
        assert name.upper() in helped.stdout, name
    assert "RELAY_RECONCILE_GIVE_UP_S          1200.0" in helped.stdout  # with its default
    assert "FAL_KEY" in helped.stdout
    assert "unset (secret)" in helped.stdout


def test_a_port_in_use_is_one_line_naming_it_and_exit_code_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli(
            "run",
            env={
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
                "FAL_QUEUE_URL": "http://127.0.0.1:9",
                "RELAY_HTTP_HOST": "127.0.0.1",
                "RELAY_HTTP_PORT": str(port),
            },
        )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"RELAY_HTTP_PORT={port}" in lines[0]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"RELAY_MAX_IN_FLIGHT": "0"}, "RELAY_MAX_IN_FLIGHT"),
        ({"RELAY_MAX_IN_FLIGHT": "many"}, "RELAY_MAX_IN_FLIGHT"),
        ({"KAFKA_SECURITY_PROTOCOL": "CARRIER_PIGEON"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"FAL_QUEUE_URL": "https://queue.fal.run"}, "FAL_KEY"),
        ({"RELAY_HTTP_PORT": "70000"}, "RELAY_HTTP_PORT"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_and_exit_code_2(
    env: dict[str, str], variable: str
) -> None:
    out = run_cli("run", env={"FAL_QUEUE_URL": "http://127.0.0.1:9", "FAL_KEY": "", **env})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert variable in lines[0]
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_unreachable_kafka_at_start_is_one_clear_line_and_exit_code_2() -> None:
    out = run_cli(
        "run",
        env={
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "FAL_QUEUE_URL": "http://127.0.0.1:9",
            "FAL_KEY": SECRET_KEY,
            "RELAY_HTTP_PORT": "0",
        },
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "KAFKA_BOOTSTRAP_SERVERS" in lines[0]
    assert SECRET_KEY not in out.stdout + out.stderr


@asynccontextmanager
async def relay_process(env: dict[str, str]) -> AsyncIterator[tuple[Any, list[dict[str, Any]]]]:
    """``lynx-relay run`` as a child process; yields it with its parsed log lines so far."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "run",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[dict[str, Any]] = []
    try:
        yield proc, lines
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def read_until(
    proc: Any, lines: list[dict[str, Any]], event: str, within: float = 60, **fields: str
) -> None:
    """Read JSON log lines from the child until one has ``event`` and ``fields`` (every line
    must parse as JSON)."""
    async with asyncio.timeout(within):
        while True:
            raw = await proc.stdout.readline()
            assert raw, f"relay exited before logging {event}"
            line = json.loads(raw)
            lines.append(line)
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                return


@pytest.mark.kafka
async def test_sigterm_exits_0_promptly_with_a_job_still_running_at_fal(topics: Topics) -> None:
    """The process logs JSON on stdout, publishes a finished job's result, and on SIGTERM
    stops intake, commits what is finished and exits 0 well before the long job ends. The
    FAL_KEY appears in none of its output."""
    config = EmulatorConfig(run_time=(0.05, 0.05))
    async with emulator_running(config) as fal:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": topics.bootstrap,
            "FAL_QUEUE_URL": fal.base_url,
            "FAL_KEY": SECRET_KEY,
            "RELAY_REQUESTS_TOPIC": topics.requests,
            "RELAY_RESULTS_TOPIC": topics.results,
            "RELAY_DEAD_LETTER_TOPIC": topics.dead_letters,
            "RELAY_GROUP_ID": topics.group,
            "RELAY_JOBS_TOPIC": topics.jobs,
            "RELAY_HTTP_PORT": "0",
            "RELAY_POLL_MIN_INTERVAL_S": "0.05",
            "RELAY_POLL_MAX_INTERVAL_S": "0.2",
        }
        async with relay_process(env) as (proc, lines):
            await read_until(proc, lines, "relay_started")
            await produce(
                topics.bootstrap,
                topics.requests,
                [request("quick"), request("long", "x [emulator:run=300]")],
                partition=0,
            )
            got = events(await consume(topics.bootstrap, topics.results, 1))
            await read_until(proc, lines, "job_submitted", request_id="long")
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                rest, err = await proc.communicate()
            took = time.monotonic() - started
    assert proc.returncode == 0, err.decode()
    assert took < 15
    for raw in rest.splitlines():
        lines.append(json.loads(raw))
    names = [line["event"] for line in lines]
    assert "relay_stopped" in names
    assert names[-1] == "relay_exited"
    assert all("ts" in line and "level" in line for line in lines)
    assert SECRET_KEY not in json.dumps(lines) + err.decode()
    assert list(got) == ["quick"]
    committed, _ends = await committed_and_end(topics)
    assert committed == {0: 1}  # "long" (offset 1) is not finished, so it is not committed


async def test_spend_prints_what_the_ledger_says_each_tenant_spent(topics: Topics) -> None:
    """``lynx-relay spend`` reads the job ledger: per tenant, the jobs and what they cost,
    equal to what the emulator billed them."""
    config = EmulatorConfig(run_time=(0.05, 0.1), unit_price=0.5)
    async with emulator_running(config) as fal:
        env = relay_env(topics, fal.base_url)
        async with relay_process(env):
            await produce(
                topics.bootstrap,
                topics.requests,
                [
                    request(f"s-{t}-{i}", f"{t} {i}", tenant=t)
                    for t in ("acme", "bolt")
                    for i in range(3)
                ],
            )
            got = events(await consume(topics.bootstrap, topics.results, 6))
        bill = fal.stats(include_jobs=True)
    assert {e["status"] for e in got.values()} == {"succeeded"}
    billed: dict[str, float] = {}
    for job in bill["jobs"]:
        tenant = str(job["input"]["prompt"]).split()[0]
        billed[tenant] = billed.get(tenant, 0.0) + float(job["billed_amount"])
    out = run_cli("spend", "--json", env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {t: s["jobs"] for t, s in report["tenants"].items()} == {"acme": 3, "bolt": 3}
    for tenant, amount in billed.items():
        assert report["tenants"][tenant]["amount"] == pytest.approx(amount)
    assert report["total"] == pytest.approx(bill["billing"]["amount_total"])
    table = run_cli("spend", "--since", "2000-01-01", env=env)
    assert table.returncode == 0, table.stderr
    assert "acme" in table.stdout
    assert "bolt" in table.stdout


async def test_a_first_run_creates_its_topics_and_logs_no_error(kafka_bootstrap: str) -> None:
    """A relay started before its topics exist creates them (RELAY_CREATE_TOPICS), takes a
    request published after its start, and a clean start says nothing at error level
    (aiokafka's start-up chatter is demoted: it retries that itself)."""
    tag = uuid.uuid4().hex[:10]
    topics = Topics(
        kafka_bootstrap, f"req-{tag}", f"res-{tag}", f"dlq-{tag}", f"grp-{tag}", 2, f"jobs-{tag}"
    )
    async with emulator_running(EmulatorConfig(run_time=(0.05, 0.1))) as fal:
        relay = await RelayProcess(
            relay_env(topics, fal.base_url, RELAY_TOPICS_PARTITIONS="2"), "first-run"
        ).start()
        try:
            await relay.wait_for("partitions_taken_over", within=60)
            await produce(topics.bootstrap, topics.requests, [request("first-1")], partition=1)
            got = events(await consume(topics.bootstrap, topics.results, 1, within=30))
            assert got["first-1"]["status"] == "succeeded"
            assert await relay.terminate() == 0
        finally:
            await relay.close()
    created = [line for line in relay.lines if line.get("event") == "topics_created"]
    assert len(created) == 1
    assert set(created[0]["topics"]) == {topics.requests, topics.results, topics.dead_letters}
    errors = [line for line in relay.lines if line.get("level") in ("error", "critical")]
    assert errors == []
