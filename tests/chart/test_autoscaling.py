"""Autoscaling: a KEDA ScaledObject on consumer lag, or an HPA on CPU/memory, never both.

KEDA's Kafka trigger reads the lag of the relay's consumer group on its requests topic; all
trigger metadata values are strings (KEDA's CRD types them as map[string]string). A Prometheus
trigger on lynx_relay_consumer_lag_records is an option.
"""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import jsonschema
import pytest

from tests.chart.chartlib import (
    FULLNAME,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    SCENARIOS,
    Manifest,
    copy_chart,
    find,
    of_kind,
    render,
    validate,
)


def _triggers(objects: list[Manifest]) -> dict[str, Manifest]:
    return {t["type"]: t for t in find(objects, "ScaledObject")["spec"]["triggers"]}


def test_keda_scales_the_deployment_on_consumer_lag() -> None:
    """The ScaledObject targets the Deployment, within its bounds, with a Kafka trigger on
    the relay's group, topic and brokers (the same values the relay gets)."""
    objects = render(SCENARIOS["keda"])
    spec = find(objects, "ScaledObject")["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 6)
    kafka = _triggers(objects)["kafka"]["metadata"]
    config = find(objects, "ConfigMap", FULLNAME)["data"]
    assert kafka["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert kafka["consumerGroup"] == config["RELAY_GROUP_ID"]
    assert kafka["topic"] == config["RELAY_REQUESTS_TOPIC"]
    assert kafka["lagThreshold"] == "16"
    assert kafka["offsetResetPolicy"] == "earliest"  # as the relay's consumer
    assert of_kind(objects, "HorizontalPodAutoscaler") == []


@pytest.mark.parametrize(
    "scenario",
    ["keda", "keda-kafka-and-prometheus", "sasl-existing-secret-ca-configmap-keda"],
)
def test_keda_metadata_values_are_all_strings(scenario: str) -> None:
    """Every trigger's metadata is a string-to-string map, numbers and booleans included."""
    for trigger in find(render(SCENARIOS[scenario]), "ScaledObject")["spec"]["triggers"]:
        for key, value in trigger["metadata"].items():
            assert isinstance(value, str), f"{trigger['type']}.{key} = {value!r}"


def test_keda_kafka_trigger_with_sasl_and_tls() -> None:
    """With SASL_SSL the trigger names KEDA's SASL mode and TLS, and takes the credentials
    from the given TriggerAuthentication."""
    trigger = _triggers(render(SCENARIOS["sasl-existing-secret-ca-configmap-keda"]))["kafka"]
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    assert trigger["metadata"]["tls"] == "enable"
    assert trigger["authenticationRef"] == {"name": "kafka-sasl"}


def test_keda_with_sasl_needs_a_trigger_authentication() -> None:
    """KEDA cannot read the lag of a SASL-protected cluster without credentials: refused."""
    values = {
        **SCENARIOS["sasl"],
        "autoscaling": {"keda": {"enabled": True}},
    }
    with pytest.raises(helm.HelmRenderError, match="authenticationRef"):
        render(values)


def test_keda_prometheus_trigger() -> None:
    """The Prometheus trigger sums lynx_relay_consumer_lag_records of this release's Service;
    fallback and HPA behavior are passed through."""
    objects = render(SCENARIOS["keda-kafka-and-prometheus"])
    metadata = _triggers(objects)["prometheus"]["metadata"]
    assert metadata["query"] == (
        f'sum(lynx_relay_consumer_lag_records{{namespace="{NAMESPACE}", service="{FULLNAME}"}})'
    )
    assert metadata["threshold"] == "16"
    spec = find(objects, "ScaledObject")["spec"]
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 2}
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {"scaleDown": {"stabilizationWindowSeconds": 600}}


def test_keda_prometheus_trigger_cannot_scale_from_zero() -> None:
    """The lag metric comes from running relays, so minReplicaCount 0 with only that signal
    would never scale up again: refused."""
    values = {
        "autoscaling": {
            "keda": {"enabled": True, "minReplicaCount": 0, "prometheus": {"enabled": True}}
        }
    }
    with pytest.raises(helm.HelmRenderError, match="minReplicaCount"):
        render(values)


def test_keda_without_a_trigger_is_refused() -> None:
    """A ScaledObject with no trigger would do nothing: refused."""
    with pytest.raises(helm.HelmRenderError, match="at least one trigger"):
        render({"autoscaling": {"keda": {"enabled": True, "kafka": {"enabled": False}}}})


def test_hpa_scales_the_deployment_on_cpu_and_memory() -> None:
    """The HPA (autoscaling/v2) targets the Deployment with the configured metrics."""
    objects = render(SCENARIOS["hpa"])
    hpa = find(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == FULLNAME
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    assert targets == {
        "cpu": {"type": "Utilization", "averageUtilization": 70},
        "memory": {"type": "Utilization", "averageUtilization": 80},
    }
    assert of_kind(objects, "ScaledObject") == []


def test_hpa_and_keda_together_are_refused_by_the_schema() -> None:
    """Both autoscalers on: values.schema.json refuses the values, pointing at keda.enabled."""
    both = {"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}}
    with pytest.raises(helm.HelmValuesError, match="/autoscaling/keda/enabled"):
        render(both)


def test_hpa_and_keda_together_are_refused_without_the_schema(tmp_path: Path) -> None:
    """The templates refuse both autoscalers too, for `--skip-schema-validation` installs."""
    chart = copy_chart(tmp_path, {"values.schema.json": ""})
    both = {"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}}
    with pytest.raises(helm.HelmRenderError, match="exclusive"):
        render(both, chart)


def test_the_scaled_object_schema_refuses_a_number_in_metadata() -> None:
    """The CRD-derived schema used by the render tests would catch an unquoted number, as
    KEDA's API server would."""
    scaled = find(render(SCENARIOS["keda"]), "ScaledObject")
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 16
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        validate(scaled, KUBERNETES_VERSIONS[0])
