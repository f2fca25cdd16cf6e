"""What ships is the relay alone: its wheel holds no emulator or demo module, and starting its
command line imports none (the fal emulator is the development package ``fal_emulator``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def uv() -> list[str]:
    """uv as the tests were started with it: ``uv run`` names itself in ``UV``; else PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def test_the_wheel_holds_no_emulator_module(tmp_path: Path) -> None:
    """``uv build --wheel``: only ``service`` modules, one console script (``lynx-relay``), and
    no dependency on the emulator."""
    done = subprocess.run(  # noqa: S603 - uv on our own project
        [*uv(), "build", "--wheel", "--out-dir", str(tmp_path), "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("lynx_relay-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    modules = [name for name in names if not name.startswith(dist_info)]
    assert modules, "the wheel holds no module at all"
    assert all(name.startswith("service/") for name in modules), modules
    assert [name for name in modules if "emulator" in name or "demo" in name] == []
    assert "service/cli/__init__.py" in modules
    assert "lynx-relay" in entry_points
    assert "fal-emulator" not in entry_points
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requires, "the wheel declares no dependency at all"
    assert [line for line in requires if "emulator" in line.lower()] == []
    # The license pyproject names, with its text beside it.
    assert "License-Expression: Apache-2.0" in metadata or "License: Apache-2.0" in metadata
    assert any(n.startswith(f"{dist_info}/licenses/LICENSE") for n in names), names


def test_importing_the_relay_cli_imports_no_emulator_module() -> None:
    """In a fresh interpreter, ``import service.cli`` (what ``lynx-relay`` runs) loads no module
    of ``fal_emulator``, nor any module named like the emulator or the demo."""
    code = (
        "import json, sys, service.cli; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] == 'fal_emulator' or 'emulator' in m or 'demo' in m)))"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == []
