"""The chart's README documents every value.

Its values table is generated from values.yaml by helm/values_table.py and must be up to
date; independently of that script, every leaf key of values.yaml appears in the table.
"""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.chart.chartlib import CHART, ROOT, leaf_paths


def test_values_table_is_up_to_date() -> None:
    """`python helm/values_table.py --check` passes: the README matches values.yaml."""
    done = subprocess.run(  # noqa: S603 - our own script with our own interpreter
        [sys.executable, str(ROOT / "helm" / "values_table.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_leaf_value_is_in_the_readme() -> None:
    """Each leaf key of values.yaml (scalars, lists, empty maps) has a row in the README."""
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    rows = {
        line.split("|")[1].strip().strip("`")
        for line in readme.splitlines()
        if line.startswith("| `")
    }
    missing = [path for path in leaf_paths(values) if path not in rows]
    assert missing == []
    assert len(list(leaf_paths(values))) > 100  # the walk really went through the tree
