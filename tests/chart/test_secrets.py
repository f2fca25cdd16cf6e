"""Credentials: FAL_KEY and the Kafka SASL password live in a Secret, never in the ConfigMap.

The chart creates the Secret from values, or uses `secrets.existingSecret` and then renders no
Secret at all; `secrets.keys` names the keys either way.
"""

from __future__ import annotations

import base64
import json

from tests.chart.chartlib import (
    FULLNAME,
    SCENARIOS,
    Manifest,
    container_environment,
    deployment,
    find,
    notes,
    of_kind,
    relay_container,
    render,
)


def _secret_refs(objects: list[Manifest]) -> dict[str, dict[str, str]]:
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in relay_container(objects)["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_fal_key_goes_into_a_chart_secret() -> None:
    """secrets.falKey becomes a key of the chart's Secret, and FAL_KEY refers to it."""
    objects = render(SCENARIOS["fal-key"])
    secret = find(objects, "Secret")
    assert secret["metadata"]["name"] == FULLNAME
    assert base64.b64decode(secret["data"]["fal-key"]).decode() == "fal-test-key"
    assert _secret_refs(objects) == {"FAL_KEY": {"name": FULLNAME, "key": "fal-key"}}


def test_sasl_password_goes_into_the_chart_secret() -> None:
    """With SASL the password is in the Secret too, and KAFKA_SASL_PASSWORD refers to it."""
    objects = render(SCENARIOS["sasl"])
    secret = find(objects, "Secret")
    password = secret["data"]["kafka-sasl-password"]
    assert base64.b64decode(password).decode() == "sasl-test-password"
    assert _secret_refs(objects)["KAFKA_SASL_PASSWORD"] == {
        "name": FULLNAME,
        "key": "kafka-sasl-password",
    }


def test_existing_secret_renders_no_secret() -> None:
    """With existingSecret the chart renders no Secret, refers to the existing one under the
    configured keys, and the pod template carries no checksum of a Secret it does not own."""
    objects = render(SCENARIOS["existing-secret"])
    assert of_kind(objects, "Secret") == []
    assert _secret_refs(objects) == {"FAL_KEY": {"name": "relay-credentials", "key": "FAL_KEY"}}
    annotations = deployment(objects)["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" not in annotations


def test_existing_secret_with_sasl() -> None:
    """existingSecret also provides the SASL password."""
    objects = render(SCENARIOS["sasl-existing-secret-ca-configmap-keda"])
    assert of_kind(objects, "Secret") == []
    refs = _secret_refs(objects)
    assert refs["KAFKA_SASL_PASSWORD"] == {
        "name": "relay-credentials",
        "key": "kafka-sasl-password",
    }
    assert refs["FAL_KEY"] == {"name": "relay-credentials", "key": "fal-key"}


def test_secrets_never_appear_outside_the_secret() -> None:
    """Neither the fal key nor the SASL password is written anywhere but the Secret."""
    objects = render(SCENARIOS["sasl"])
    others = json.dumps([o for o in objects if o["kind"] != "Secret"])
    assert "fal-test-key" not in others
    assert "sasl-test-password" not in others
    assert "FAL_KEY" not in find(objects, "ConfigMap", FULLNAME)["data"]


def test_no_credentials_no_secret_and_a_warning() -> None:
    """With no credential at all there is nothing to store: no Secret, no FAL_KEY variable,
    and NOTES.txt warns that the relay will refuse to start against the real fal."""
    objects = render()
    assert of_kind(objects, "Secret") == []
    assert "FAL_KEY" not in container_environment(objects)
    assert "WARNING: no fal key" in notes()
    assert "WARNING" not in notes(SCENARIOS["fal-key"])
    assert "WARNING" not in notes({"config": {"fal": {"queueUrl": "http://127.0.0.1:8470"}}})
