"""The job ledger's local checkpoint (config.relay.ledgerCheckpoint, the chart's README
"Restarts and the ledger checkpoint").

- On by default: an emptyDir (with a sizeLimit) mounted writable at /var/lib/lynx-relay/ledger,
  which RELAY_LEDGER_CHECKPOINT_DIR names, with RELAY_LEDGER_CHECKPOINT_INTERVAL_S and
  RELAY_LEDGER_CHECKPOINT_MAX_AGE_S; the relay's own settings loader accepts them, and the
  checkpoint file it would write lies in that emptyDir.
- enabled: false renders none of them (volume, mount, variables): every start reads the
  whole ledger.
- The schema refuses what the relay would refuse (the interval and age ranges) and unknown keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from service.app import checkpoint_place
from service.config import load_settings
from tests.chart.chartlib import (
    KUBERNETES_VERSIONS,
    SCENARIOS,
    Manifest,
    container_environment,
    deployment,
    relay_container,
    render,
    validate,
)

FOLDER = "/var/lib/lynx-relay/ledger"
VOLUME = "ledger-checkpoint"
VARIABLES = {
    "RELAY_LEDGER_CHECKPOINT_DIR",
    "RELAY_LEDGER_CHECKPOINT_INTERVAL_S",
    "RELAY_LEDGER_CHECKPOINT_MAX_AGE_S",
}


def _volume(objects: list[Manifest]) -> Manifest | None:
    pod = deployment(objects)["spec"]["template"]["spec"]
    found = [v for v in pod["volumes"] if v["name"] == VOLUME]
    assert len(found) <= 1
    return found[0] if found else None


def _mount(objects: list[Manifest]) -> Manifest | None:
    found = [m for m in relay_container(objects)["volumeMounts"] if m["name"] == VOLUME]
    assert len(found) <= 1
    return found[0] if found else None


def test_default_mounts_an_empty_dir_that_the_settings_name() -> None:
    """By default the pod has a disk-backed emptyDir of 1Gi, mounted writable at the folder
    RELAY_LEDGER_CHECKPOINT_DIR names, and the two other settings carry the relay's defaults."""
    objects = render(SCENARIOS["fal-key"])
    assert _volume(objects) == {"name": VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}
    mount = _mount(objects)
    assert mount == {"name": VOLUME, "mountPath": FOLDER}  # not readOnly, no subPath
    env = container_environment(objects)
    assert {name: env[name] for name in VARIABLES} == {
        "RELAY_LEDGER_CHECKPOINT_DIR": FOLDER,
        "RELAY_LEDGER_CHECKPOINT_INTERVAL_S": "300",
        "RELAY_LEDGER_CHECKPOINT_MAX_AGE_S": "43200",
    }
    settings = load_settings(env)
    assert settings.relay_ledger_checkpoint_dir == Path(FOLDER)
    assert settings.relay_ledger_checkpoint_interval_s == 300
    assert settings.relay_ledger_checkpoint_max_age_s == 43200
    place = checkpoint_place(settings)
    assert place is not None
    # The file and its temporary twin are written in the mounted folder.
    assert place.path == Path(FOLDER) / "lynx.relay.jobs.ledger.npz"


def test_the_root_filesystem_stays_read_only() -> None:
    """The checkpoint does not loosen the container: its folder is writable only because it
    is an emptyDir."""
    objects = render()
    assert relay_container(objects)["securityContext"]["readOnlyRootFilesystem"] is True
    volume = _volume(objects)
    assert volume is not None
    assert set(volume) == {"name", "emptyDir"}


def test_disabled_renders_no_volume_no_mount_and_no_setting() -> None:
    """enabled: false leaves out the volume, the mount and all three variables, so the relay
    keeps no checkpoint (it reads the whole ledger at every start)."""
    objects = render(SCENARIOS["ledger-checkpoint-off"])
    assert _volume(objects) is None
    assert _mount(objects) is None
    env = container_environment(objects)
    assert not VARIABLES & set(env)
    settings = load_settings({**env, "FAL_KEY": "fal-test-key"})
    assert settings.relay_ledger_checkpoint_dir is None


def test_values_reach_the_volume_and_the_settings() -> None:
    """sizeLimit, medium and the two durations are passed on as given (numbers in a form the
    relay parses)."""
    values = {
        "config": {
            "relay": {
                "ledgerCheckpoint": {
                    "intervalSeconds": 60,
                    "maxAgeSeconds": 7200.5,
                    "sizeLimit": "512Mi",
                    "medium": "Memory",
                }
            }
        }
    }
    objects = render(values)
    assert _volume(objects) == {
        "name": VOLUME,
        "emptyDir": {"medium": "Memory", "sizeLimit": "512Mi"},
    }
    env = container_environment(objects)
    assert env["RELAY_LEDGER_CHECKPOINT_INTERVAL_S"] == "60"
    assert env["RELAY_LEDGER_CHECKPOINT_MAX_AGE_S"] == "7200.5"
    for version in KUBERNETES_VERSIONS:
        for obj in objects:
            validate(obj, version)


def test_a_setting_change_rolls_the_pods() -> None:
    """The relay reads its settings once: a new interval changes the pod template."""

    def checksum(interval: int) -> str:
        values = {"config": {"relay": {"ledgerCheckpoint": {"intervalSeconds": interval}}}}
        annotations = deployment(render(values))["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    assert checksum(300) != checksum(600)


SCHEMA_REFUSES: dict[str, tuple[dict[str, Any], str]] = {
    "interval below a second": ({"intervalSeconds": 0.5}, "intervalSeconds"),
    "interval beyond a day": ({"intervalSeconds": 86401}, "intervalSeconds"),
    "age of zero": ({"maxAgeSeconds": 0}, "maxAgeSeconds"),
    "age beyond a day": ({"maxAgeSeconds": 172800}, "maxAgeSeconds"),
    "enabled as a word": ({"enabled": "yes"}, "enabled"),
    "size that is no quantity": ({"sizeLimit": "1 GB"}, "sizeLimit"),
    "unknown medium": ({"medium": "HugePages"}, "medium"),
    "misspelt key": ({"interval": 60}, "'interval' not allowed"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_REFUSES))
def test_schema_refuses(case: str) -> None:
    """Values the relay would refuse at start, or that mean nothing, fail the install."""
    checkpoint, where = SCHEMA_REFUSES[case]
    with pytest.raises(helm.HelmValuesError, match=where):
        render({"config": {"relay": {"ledgerCheckpoint": checkpoint}}})
