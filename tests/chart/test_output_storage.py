"""Output storage (README "Output storage"): config.output and three config.fal values.

- Off by default: no RELAY_OUTPUT_URL, and the settings the chart always renders carry the
  relay's own defaults.
- Every value reaches the relay as its RELAY_OUTPUT_* / RELAY_FAL_* variable, in a form the
  relay's own settings loader accepts.
- The store's credentials: either workload identity (serviceAccount.annotations; nothing of the
  chart's changes) or an existing Secret whose keys all become variables (envFrom), never a
  Secret the chart renders or a value in the ConfigMap.
- The schema's key template patterns agree with the relay's own check of the template.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from service.config import Settings, load_settings
from service.core.storage import template_problems
from tests.chart.chartlib import (
    CHART,
    FULLNAME,
    KUBERNETES_VERSIONS,
    SCENARIOS,
    container_environment,
    deployment,
    find,
    notes,
    of_kind,
    relay_container,
    render,
)

OUTPUT_FIELDS = [name for name in Settings.model_fields if name.startswith("relay_output_")]
FAL_STORAGE_FIELDS = [
    "relay_fal_output_ttl_s",
    "relay_fal_delete_after_copy",
    "relay_fal_store_io",
]
CREDENTIALS = {
    "relay-output-credentials": {
        "AWS_ACCESS_KEY_ID": "minio-access",
        "AWS_SECRET_ACCESS_KEY": "minio-secret",
    }
}


def test_off_by_default_with_the_relays_defaults() -> None:
    """By default nothing is copied: RELAY_OUTPUT_URL (and the endpoint, region and fal's TTL)
    are not set at all, and what the chart does render means the relay's own defaults."""
    objects = render({"secrets": {"falKey": "fal-test-key"}})
    env = container_environment(objects)
    unset = {"RELAY_OUTPUT_URL", "RELAY_OUTPUT_ENDPOINT_URL", "RELAY_OUTPUT_REGION"}
    assert not (unset | {"RELAY_FAL_OUTPUT_TTL_S"}) & set(env)
    settings = load_settings(env)
    for name in OUTPUT_FIELDS + FAL_STORAGE_FIELDS:
        assert getattr(settings, name) == Settings.model_fields[name].default, name
    assert relay_container(objects)["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]


def test_every_output_value_becomes_its_variable() -> None:
    """Each config.output / config.fal value reaches the relay as its variable, numbers in a
    form the relay parses, and the relay's settings loader reads them back unchanged."""
    values = {
        "secrets": {"falKey": "fal-test-key"},
        "config": {
            "output": {
                "url": "az://videos/lynx/",
                "region": "westeurope",
                "keyTemplate": "{date}/{tenant}/{request_id}.mp4",
                "eventUrl": "presigned",
                "presignTtlSeconds": 3600,
                "maxCopies": 16,
                "partMib": 64,
                "retrySeconds": 1800,
                "onFailure": "fal_url",
            },
            "fal": {"outputTtlSeconds": 2592000, "deleteAfterCopy": True, "storeIo": False},
        },
    }
    env = container_environment(render(values))
    assert {k: v for k, v in env.items() if k.startswith("RELAY_OUTPUT_")} == {
        "RELAY_OUTPUT_URL": "az://videos/lynx/",
        "RELAY_OUTPUT_REGION": "westeurope",
        "RELAY_OUTPUT_KEY_TEMPLATE": "{date}/{tenant}/{request_id}.mp4",
        "RELAY_OUTPUT_EVENT_URL": "presigned",
        "RELAY_OUTPUT_PRESIGN_TTL_S": "3600",
        "RELAY_OUTPUT_MAX_COPIES": "16",
        "RELAY_OUTPUT_PART_MIB": "64",
        "RELAY_OUTPUT_RETRY_S": "1800",
        "RELAY_OUTPUT_ON_FAILURE": "fal_url",
    }
    assert env["RELAY_FAL_OUTPUT_TTL_S"] == "2592000"  # not 2.592e+06
    assert env["RELAY_FAL_DELETE_AFTER_COPY"] == "true"
    assert env["RELAY_FAL_STORE_IO"] == "false"
    settings = load_settings(env)
    assert settings.relay_output_url == "az://videos/lynx/"
    assert settings.relay_output_endpoint_url is None
    assert settings.relay_output_event_url == "presigned"
    assert settings.relay_output_presign_ttl_s == 3600
    assert settings.relay_output_part_mib == 64
    assert settings.relay_output_retry_s == 1800
    assert settings.relay_output_on_failure == "fal_url"
    assert settings.relay_fal_output_ttl_s == 2592000
    assert settings.relay_fal_delete_after_copy is True
    assert settings.relay_fal_store_io is False


def test_s3_compatible_store_with_keys_from_a_secret() -> None:
    """MinIO: the endpoint and region are set, and the Secret named by
    config.output.credentialsSecret is read whole through envFrom, after the chart's ConfigMap.
    The chart renders no Secret of its own for it and writes no credential anywhere."""
    objects = render(SCENARIOS["output-s3-compatible"])
    container = relay_container(objects)
    assert container["envFrom"] == [
        {"configMapRef": {"name": FULLNAME}},
        {"secretRef": {"name": "relay-output-credentials"}},
    ]
    assert [s["metadata"]["name"] for s in of_kind(objects, "Secret")] == [FULLNAME]  # FAL_KEY
    env = container_environment(objects, external=CREDENTIALS)
    assert env["AWS_ACCESS_KEY_ID"] == "minio-access"
    assert env["AWS_SECRET_ACCESS_KEY"] == "minio-secret"
    config_map = find(objects, "ConfigMap", FULLNAME)["data"]
    assert not any(key.startswith("AWS_") for key in config_map)
    settings = load_settings(env)
    assert settings.relay_output_url == "s3://videos/lynx/"
    assert settings.relay_output_endpoint_url == "http://minio.storage.svc:9000"
    assert settings.relay_output_region == "us-east-1"
    assert settings.relay_fal_delete_after_copy is True


def test_extra_env_sources_come_after_the_credentials() -> None:
    """extraEnvVarsCM and extraEnvVarsSecret still come last (they win over everything)."""
    values = {
        "config": {"output": {"url": "s3://videos", "credentialsSecret": "store-keys"}},
        "extraEnvVarsCM": "relay-extra",
        "extraEnvVarsSecret": "relay-extra-secret",
    }
    names = [
        next(iter(source.values()))["name"] for source in relay_container(render(values))["envFrom"]
    ]
    assert names == [FULLNAME, "store-keys", "relay-extra", "relay-extra-secret"]


def test_workload_identity_needs_only_the_service_account_annotation() -> None:
    """IRSA: the role is an annotation of the chart's ServiceAccount, which the pods run as;
    no Secret is read, and no API token is mounted (EKS's webhook projects its own token)."""
    objects = render(SCENARIOS["output-s3-irsa"])
    account = find(objects, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == (
        "arn:aws:iam::111122223333:role/lynx-relay"
    )
    assert account["automountServiceAccountToken"] is False
    pod = deployment(objects)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    assert relay_container(objects)["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]
    settings = load_settings(container_environment(objects))
    assert settings.relay_output_url == "s3://videos"
    assert settings.relay_output_event_url == "presigned"


def test_every_option_of_the_everything_scenario() -> None:
    """The scenario with nearly every value set: the output settings it gives arrive whole
    (a fractional retry time stays fractional)."""
    env = container_environment(
        render(SCENARIOS["everything"]),
        external={**CREDENTIALS, "relay-extra": {}, "relay-extra-secret": {}},
    )
    assert env["RELAY_OUTPUT_RETRY_S"] == "300.5"
    assert env["RELAY_OUTPUT_ENDPOINT_URL"] == "https://storage.example.com:8443"
    assert env["RELAY_FAL_OUTPUT_TTL_S"] == "1209600"
    assert env["AWS_ACCESS_KEY_ID"] == "minio-access"


def test_notes_mention_the_copy() -> None:
    """NOTES.txt says where videos are copied, and nothing about it when output is off."""
    assert "copied to gs://videos/lynx/" in notes(
        {"config": {"output": {"url": "gs://videos/lynx/"}}}
    )
    assert "copied to" not in notes()


# Key templates: the relay's verdict (template_problems) and the schema's must agree.
KEY_TEMPLATES = [
    "{tenant}/{request_id}.mp4",
    "{request_id}",
    "videos/{date}/{tenant}/{request_id}-{fal_request_id}.mp4",
    "{request_id:>40}.mp4",
    "{request_id!s}.mp4",
    "{{literal}}/{request_id}.mp4",
    "",
    "{tenant}/{date}.mp4",
    "/{request_id}.mp4",
    "{user}/{request_id}.mp4",
    "{0}/{request_id}.mp4",
    "{request_id.hex}.mp4",
    "{tenant}/{request_id",
    "{request_id}}.mp4",
]


@pytest.mark.parametrize("template", KEY_TEMPLATES)
def test_schema_and_relay_agree_on_key_templates(template: str) -> None:
    """values.schema.json accepts a key template exactly when the relay's own check does."""
    values = {"config": {"output": {"keyTemplate": template}}}
    with helm.Chart.load(CHART) as chart:
        try:
            chart.validate_schema(chart.merge_values(values))
            accepted = True
        except helm.HelmValuesError:
            accepted = False
    assert accepted == (template_problems(template) is None)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_cli_accepts_the_output_render(tmp_path: Path, version: str) -> None:
    """The kubernetes-validate command line (`--strict`) accepts the S3-compatible render
    (envFrom of the credentials Secret, the store's egress rule)."""
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(
        yaml.safe_dump_all(render(SCENARIOS["output-s3-compatible"])), encoding="utf-8"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and a file we wrote
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARN" not in done.stdout
