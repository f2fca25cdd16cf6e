"""Observability fixtures: Prometheus and promtool from scripts/prometheus, and a real
Prometheus server on loopback that scrapes a relay with the chart's rule file loaded."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from dashboards.promql import ALERTS, PrometheusAPI
from tests.conftest import ROOT, free_port

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
SCRAPE_JOB = "lynx-relay"  # the job name alerts.yaml expects (see its header)


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    """The folder with the ``prometheus`` and ``promtool`` binaries: Debian's package,
    fetched and unpacked into the user's cache on first use (no root install)."""
    fetched = subprocess.run(  # noqa: S603 - our own script
        [str(ROOT / "scripts" / "prometheus"), "fetch"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if fetched.returncode != 0:
        pytest.fail(f"scripts/prometheus fetch failed:\n{fetched.stderr[-4000:]}", pytrace=False)
    folder = Path(fetched.stdout.strip().splitlines()[-1])
    assert (folder / "prometheus").is_file()
    assert (folder / "promtool").is_file()
    return folder


def promtool(bin_dir: Path, *args: str, cwd: Path = HERE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the fetched promtool, fixed arguments
        [str(bin_dir / "promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


@contextlib.contextmanager
def prometheus_running(
    bin_dir: Path, folder: Path, target: str, rule_files: tuple[Path, ...] = (ALERTS,)
) -> Iterator[PrometheusAPI]:
    """A Prometheus that scrapes ``target`` every second as job ``lynx-relay`` and evaluates
    ``rule_files`` every second, with its data in ``folder``; stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": SCRAPE_JOB, "static_configs": [{"targets": [target]}]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    # The package's paths point at a system install; these are the unpacked copies.
    package = bin_dir.parent.parent
    log_path = folder / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - the fetched binary, fixed arguments
            [
                str(bin_dir / "prometheus"),
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.local-assets={package / 'usr/share/prometheus/web'}",
                f"--web.console.templates={package / 'etc/prometheus/consoles'}",
                f"--web.console.libraries={package / 'etc/prometheus/console_libraries'}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    api = PrometheusAPI(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while not api.ready():
            if process.poll() is not None or time.monotonic() > deadline:
                log_tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"Prometheus did not become ready:\n{log_tail}", pytrace=False)
            time.sleep(0.1)  # readiness has no event to wait on; it takes well under a second
        yield api
    finally:
        api.close()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


async def poll_until(fetch: Callable[[], T], done: Callable[[T], bool], within: float) -> T:
    """Call ``fetch`` (a blocking call, run in a thread so that the relay in this event loop
    keeps running) until ``done`` accepts its answer or ``within`` seconds pass; return the
    last answer either way, for the caller's assertion to show."""
    deadline = time.monotonic() + within
    while True:
        got = await asyncio.to_thread(fetch)
        if done(got) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.25)


async def eventually(check: Callable[[], T | None], what: str, within: float = 30.0) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after
    ``within`` seconds."""
    got = await poll_until(check, bool, within)
    if not got:
        raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
    return got
