"""``fal-emulator serve | demo`` (also ``python -m fal_emulator``), the development package's own
command: every emulator option on ``serve``, JSON log lines, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from fal_emulator.cli import build_parser
from tests.unit.emulator_support import DEADLINE, KEY, emulator_parser

SCRIPT = Path(sys.executable).parent / "fal-emulator"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the installed console script, fixed arguments
        [str(SCRIPT), *argv], capture_output=True, text=True, timeout=30, check=False
    )


def test_the_console_script_has_serve_and_demo() -> None:
    """The installed ``fal-emulator`` script runs and names both sub-commands."""
    out = run("--help")
    assert out.returncode == 0, out.stderr
    assert "serve" in out.stdout
    assert "demo" in out.stdout


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_serve_takes_every_emulator_option(capsys: pytest.CaptureFixture[str]) -> None:
    """Each option of ``config.add_arguments`` (the old ``lynx-relay emulator`` options), and
    ``--log-level``; ``demo`` takes the old ``lynx-relay demo`` options."""
    options = {
        option
        for action in emulator_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert {"--run-time", "--queue-wait", "--faults", "--webhook-drop-rate"} <= options
    serve = help_text(capsys, "serve")
    for option in sorted(options | {"--log-level"}):
        assert option in serve
    demo = help_text(capsys, "demo")
    assert "--bootstrap" in demo
    assert "--timeout" in demo


async def test_python_m_fal_emulator_serves_until_sigterm() -> None:
    """``python -m fal_emulator serve --port 0`` logs ``emulator_listening`` with its base URL
    as a JSON line, answers, and exits 0 on SIGTERM; every stdout line is JSON, without the
    key."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fal_emulator",
        "serve",
        "--port",
        "0",
        "--fal-key",
        KEY,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(10 * DEADLINE):
            while not any(line.get("event") == "emulator_listening" for line in lines):
                raw = await proc.stdout.readline()
                assert raw, "the emulator exited before listening"
                lines.append(json.loads(raw))
        base_url = lines[-1]["base_url"]
        async with httpx.AsyncClient() as client:
            stats = await client.get(f"{base_url}/_emulator/stats")
            refused = await client.post(f"{base_url}/fal-ai/lynx", json={})
        assert stats.status_code == 200
        assert refused.status_code == 401
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10 * DEADLINE):
            rest, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    lines.extend(json.loads(raw) for raw in rest.splitlines())
    assert all("ts" in line and "level" in line for line in lines)
    assert KEY not in json.dumps(lines) + err.decode()
