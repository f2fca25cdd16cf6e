"""The container image definition: lint-clean, non-root, read-only friendly, and in step with
the chart.

hadolint passes with the repository's .hadolint.yaml. The final stage runs `lynx-relay run`
under tini as the numeric user the chart's runAsUser/runAsGroup name, exposes the port the
chart probes, and needs no writes at runtime; the builder installs the locked, non-dev
environment with a pinned uv.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.chart.chartlib import CHART, ROOT, relay_container, render

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each a list of (INSTRUCTION, arguments) with line
    continuations joined and comments dropped. Enough of the Dockerfile grammar for ours."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert match, line
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], match.group(1))
            stages.append(Stage(base=base, name=match.group(2)))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before FROM: {line}"
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
FINAL = STAGES[-1]


def _chart_values() -> dict[str, dict[str, int]]:
    values: dict[str, dict[str, int]] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def test_hadolint_passes() -> None:
    """hadolint (with .hadolint.yaml: no ignored rule, fail on any severity) finds nothing."""
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(  # noqa: S603 - the pinned dev tool on our own Dockerfile
        [str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_config_ignores_nothing_without_a_reason() -> None:
    """Every ignored rule in .hadolint.yaml has a comment giving the reason."""
    config_text = (ROOT / ".hadolint.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(config_text)
    for rule in config.get("ignored") or []:
        line = next(x for x in config_text.splitlines() if x.strip().startswith(f"- {rule}"))
        assert "#" in line, f"{rule} is ignored without a reason"


def test_final_stage_runs_as_the_charts_numeric_non_root_user() -> None:
    """USER is numeric uid:gid, not root, and equals the chart's runAsUser/runAsGroup (in
    values and in the rendered Deployment), so runAsNonRoot can be verified by the kubelet."""
    user, _, group = FINAL.last("USER").partition(":")
    assert user.isdigit(), "a numeric USER lets Kubernetes check runAsNonRoot"
    assert group.isdigit()
    assert int(user) != 0
    values = _chart_values()
    for context in ("podSecurityContext", "containerSecurityContext"):
        assert values[context]["runAsUser"] == int(user)
        assert values[context]["runAsGroup"] == int(group)
    rendered = relay_container(render())["securityContext"]
    assert (rendered["runAsUser"], rendered["runAsGroup"]) == (int(user), int(group))


def test_final_stage_runs_lynx_relay_under_tini() -> None:
    """CMD is `lynx-relay run` (the installed console script) and ENTRYPOINT is tini, which
    forwards SIGTERM and reaps children."""
    assert json.loads(FINAL.last("CMD")) == ["lynx-relay", "run"]
    entrypoint = json.loads(FINAL.last("ENTRYPOINT"))
    assert entrypoint[0].endswith("/tini")
    assert entrypoint[1:] == ["--"]
    assert any(re.search(r"apt-get install .*\btini=\S+", run) for run in FINAL.all("RUN"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "lynx-relay" in scripts
    # The chart keeps the image's entrypoint and command.
    container = relay_container(render())
    assert "command" not in container
    assert "args" not in container


def test_final_stage_exposes_the_charts_port_and_writes_nothing() -> None:
    """EXPOSE matches the chart's container port; no bytecode is written at runtime (the
    root filesystem is read-only), and the builder compiled it ahead of time."""
    values = _chart_values()
    assert FINAL.last("EXPOSE") == str(values["containerPorts"]["http"])
    env = " ".join(FINAL.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    builder_env = " ".join(STAGES[0].all("ENV"))
    assert "UV_COMPILE_BYTECODE=1" in builder_env


def test_final_stage_has_oci_labels() -> None:
    """The image carries the OCI title, version, revision, source-free metadata labels."""
    labels = " ".join(FINAL.all("LABEL"))
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_builder_installs_the_locked_environment_with_a_pinned_uv() -> None:
    """uv comes from PyPI with pip at a pinned version, and `uv sync --locked --no-dev`
    installs exactly uv.lock without the dev tools."""
    builder = STAGES[0]
    runs = " ".join(builder.all("RUN"))
    assert re.search(r"pip install [^&]*\buv==\$\{UV_VERSION\}", runs)
    uv_version = next(a for a in builder.all("ARG") if a.startswith("UV_VERSION="))
    assert re.fullmatch(r"UV_VERSION=\d+\.\d+\.\d+", uv_version)
    syncs = re.findall(r"uv sync [^&]*", runs)
    assert syncs
    for sync in syncs:
        assert "--locked" in sync
        assert "--no-dev" in sync
    assert any("--no-editable" in sync for sync in syncs)
    assert f"{FINAL.base}" == builder.base, "same base: the venv's python symlink must resolve"


def test_base_images_are_pinned_slim_python_311() -> None:
    """Both stages use a versioned slim Python 3.11 image, never a floating tag."""
    for stage in STAGES:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", stage.base), stage.base


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    """The build context is an allow-list: local virtualenvs, caches and tests stay out."""
    lines = [
        x.strip()
        for x in (ROOT / ".dockerignore").read_text().splitlines()
        if x.strip() and not x.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    copied = set()
    for stage in STAGES:
        for args in stage.all("COPY"):
            if "--from=" not in args:
                copied.update(args.split()[:-1])
    assert copied <= allowed


def test_the_image_carries_no_fal_emulator_code() -> None:
    """The fal emulator is a dev-group path dependency: the builder copies only its
    pyproject.toml (``uv sync --locked`` reads every group's metadata to check the lock), the
    build context allows nothing else of it, ``--no-dev`` installs none of it, and the final
    stage takes nothing but the builder's virtual environment."""
    sources = [
        source
        for stage in STAGES
        for args in stage.all("COPY")
        if "--from=" not in args
        for source in args.split()[:-1]
    ]
    assert [s for s in sources if s.startswith("fal_emulator")] == ["fal_emulator/pyproject.toml"]
    allowed = [
        line.strip()[1:]
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip().startswith("!")
    ]
    assert [a for a in allowed if a.startswith("fal_emulator")] == ["fal_emulator/pyproject.toml"]
    assert FINAL.all("COPY") == ["--from=builder /app/.venv /app/.venv"]
