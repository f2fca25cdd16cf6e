"""Bad values are refused before anything reaches a cluster.

values.schema.json refuses wrong types, unknown keys (at the top level and inside the chart's
own sections), out-of-range numbers and unknown enum values; the templates refuse the
combinations a schema cannot say clearly, each with a message naming the values involved.
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.chart.chartlib import CHART, SCENARIOS, render

SCHEMA_REFUSES: dict[str, tuple[dict[str, Any], str]] = {
    "replica count as a word": ({"replicaCount": "two"}, "/replicaCount"),
    "hpa and keda together": (
        {"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}},
        "/autoscaling/keda/enabled",
    ),
    "unknown top-level key": ({"replicas": 3}, "'replicas' not allowed"),
    "misspelt nested key": (
        {"config": {"kafka": {"bootstrapServer": "kafka:9092"}}},
        "'bootstrapServer' not allowed",
    ),
    "unknown security protocol": (
        {"config": {"kafka": {"securityProtocol": "TLS"}}},
        "/config/kafka/securityProtocol",
    ),
    "unknown sasl mechanism": (
        {"config": {"kafka": {"sasl": {"mechanism": "GSSAPI"}}}},
        "/config/kafka/sasl/mechanism",
    ),
    "zero in-flight jobs": ({"config": {"relay": {"maxInFlight": 0}}}, "/config/relay/maxInFlight"),
    "a string for a number": (
        {"config": {"relay": {"jobTimeoutSeconds": "1h"}}},
        "/config/relay/jobTimeoutSeconds",
    ),
    "unknown log level": ({"config": {"relay": {"logLevel": "trace"}}}, "/config/relay/logLevel"),
    "malformed digest": ({"image": {"digest": "latest"}}, "/image/digest"),
    "keda metadata as a word": (
        {"autoscaling": {"keda": {"kafka": {"lagThreshold": "many"}}}},
        "/autoscaling/keda/kafka/lagThreshold",
    ),
    "probe typo": ({"livenessProbe": {"periodSecond": 5}}, "'periodSecond' not allowed"),
    "relative CA path": (
        {"config": {"kafka": {"tls": {"caFile": "ca.pem"}}}},
        "/config/kafka/tls/caFile",
    ),
    # The tenants file: what the relay would refuse at start (service/tenants.py).
    "misspelt tenant policy key": (
        {"config": {"relay": {"tenants": {"tenants": {"checkout": {"wieght": 3}}}}}},
        "'wieght' not allowed",
    ),
    "tenant name outside the pattern": (
        {"config": {"relay": {"tenants": {"tenants": {"check out": {"weight": 3}}}}}},
        "'check out' does not match pattern",
    ),
    "unknown priority class": (
        {"config": {"relay": {"tenants": {"default": {"priorities": ["urgent"]}}}}},
        "/config/relay/tenants/default/priorities/0",
    ),
    "tenant weight of zero": (
        {"config": {"relay": {"tenants": {"tenants": {"checkout": {"weight": 0}}}}}},
        "/config/relay/tenants/tenants/checkout/weight",
    ),
    "tenants file with an unknown top-level key": (
        {"config": {"relay": {"tenants": {"tenant": {"checkout": {"weight": 3}}}}}},
        "'tenant' not allowed",
    ),
    "negative fal concurrency": (
        {"config": {"relay": {"falConcurrency": -1}}},
        "/config/relay/falConcurrency",
    ),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_REFUSES))
def test_schema_refuses(case: str) -> None:
    """Each bad value set fails schema validation, and the message points at the value."""
    values, where = SCHEMA_REFUSES[case]
    with pytest.raises(helm.HelmValuesError, match=where):
        render(values)
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_schema_accepts_every_scenario(scenario: str) -> None:
    """The schema is not stricter than the chart: every tested scenario passes it."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(SCENARIOS[scenario]))


SASL = {"config": {"kafka": {"securityProtocol": "SASL_SSL"}}}
TEMPLATE_REFUSES: dict[str, tuple[dict[str, Any], str]] = {
    "sasl without a mechanism": (SASL, "config.kafka.sasl.mechanism is required"),
    "sasl without a username": (
        {
            "config": {
                "kafka": {"securityProtocol": "SASL_PLAINTEXT", "sasl": {"mechanism": "PLAIN"}}
            }
        },
        "config.kafka.sasl.username is required",
    ),
    "sasl without a password": (
        {
            "config": {
                "kafka": {
                    "securityProtocol": "SASL_SSL",
                    "sasl": {"mechanism": "PLAIN", "username": "relay"},
                }
            }
        },
        "secrets.kafkaSaslPassword",
    ),
    "two CA sources": (
        {
            "config": {
                "kafka": {
                    "tls": {
                        "caSecret": {"name": "a", "key": "ca.crt"},
                        "caConfigMap": {"name": "b", "key": "ca.crt"},
                    }
                }
            }
        },
        "exclusive",
    ),
    "dedupe retention shorter than a job": (
        {"config": {"relay": {"dedupeRetentionSeconds": 60, "jobTimeoutSeconds": 3600}}},
        "dedupeRetentionSeconds must exceed",
    ),
    "poll minimum above maximum": (
        {"config": {"relay": {"pollMinIntervalSeconds": 20, "pollMaxIntervalSeconds": 10}}},
        "pollMinIntervalSeconds",
    ),
    "hpa without a metric": (
        {"autoscaling": {"hpa": {"enabled": True, "targetCPUUtilizationPercentage": 0}}},
        "targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage",
    ),
}


@pytest.mark.parametrize("case", sorted(TEMPLATE_REFUSES))
def test_templates_refuse(case: str) -> None:
    """Combinations the relay would refuse at start (exit code 2) fail the render already."""
    values, message = TEMPLATE_REFUSES[case]
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)
