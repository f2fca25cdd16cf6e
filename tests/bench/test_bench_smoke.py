"""The benchmark suite still runs: a tiny smoke version of two of its scenarios (the figures
are not judged here; benchmarks are not tests)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.timeout(450)
def test_the_benchmark_command_runs_at_smoke_size() -> None:
    done = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "dead-letter,crash"],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5. dead letters: msg/s" in done.stdout
    assert "6. crash: duplicate submissions" in done.stdout
