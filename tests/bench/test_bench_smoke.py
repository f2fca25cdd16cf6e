"""The benchmark suite still runs: a tiny smoke version of one of its scenarios (the figures
are not judged here; benchmarks are not tests). The dead-letter scenario exercises the whole
harness (broker, emulator, both systems as processes, the report); the crash scenario's smoke
run took 80 s, an eighth of the suite, and what it shows is tested in
tests/integration/test_durability.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(ROOT / "bench" / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
        cwd=ROOT,
    )


@pytest.mark.timeout(450)
def test_the_benchmark_command_runs_at_smoke_size(tmp_path: Path) -> None:
    output = tmp_path / "smoke.md"
    done = bench("--quick", "--only", "dead-letter", "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5. dead letters: msg/s" in done.stdout
    # The report can be written again from the figures alone, the same.
    written = output.read_text()
    output.unlink()
    again = bench("--report-from", str(output.with_suffix(".json")))
    assert again.returncode == 0, again.stderr[-3000:]
    assert output.read_text() == written
