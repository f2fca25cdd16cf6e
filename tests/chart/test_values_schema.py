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
    # Output storage: what the relay's settings would refuse at start (service/config.py).
    "output URL of an unknown scheme": (
        {"config": {"output": {"url": "https://videos.s3.amazonaws.com/lynx/"}}},
        "/config/output/url",
    ),
    "output URL without a bucket": (
        {"config": {"output": {"url": "s3://"}}},
        "/config/output/url",
    ),
    "output endpoint without a scheme": (
        {"config": {"output": {"endpointUrl": "minio.storage.svc:9000"}}},
        "/config/output/endpointUrl",
    ),
    "event URL outside the enum": (
        {"config": {"output": {"eventUrl": "signed"}}},
        "/config/output/eventUrl",
    ),
    "part size below S3's 5 MiB": (
        {"config": {"output": {"partMib": 4}}},
        "/config/output/partMib",
    ),
    "part size above 512 MiB": (
        {"config": {"output": {"partMib": 1024}}},
        "/config/output/partMib",
    ),
    "presigned URL beyond 7 days": (
        {"config": {"output": {"presignTtlSeconds": 604801}}},
        "/config/output/presignTtlSeconds",
    ),
    "no copy at a time": ({"config": {"output": {"maxCopies": 0}}}, "/config/output/maxCopies"),
    "negative retry time": (
        {"config": {"output": {"retrySeconds": -1}}},
        "/config/output/retrySeconds",
    ),
    "unknown failure policy": (
        {"config": {"output": {"onFailure": "ignore"}}},
        "/config/output/onFailure",
    ),
    "key template without request_id": (
        {"config": {"output": {"keyTemplate": "{tenant}/{date}.mp4"}}},
        "/config/output/keyTemplate",
    ),
    "key template with an unknown field": (
        {"config": {"output": {"keyTemplate": "{user}/{request_id}.mp4"}}},
        "/config/output/keyTemplate",
    ),
    "key template with a leading slash": (
        {"config": {"output": {"keyTemplate": "/{request_id}.mp4"}}},
        "/config/output/keyTemplate",
    ),
    "credentials secret that is no name": (
        {"config": {"output": {"credentialsSecret": "Output Keys"}}},
        "/config/output/credentialsSecret",
    ),
    "misspelt output key": (
        {"config": {"output": {"bucket": "videos"}}},
        "'bucket' not allowed",
    ),
    "fal output lifetime below a minute": (
        {"config": {"fal": {"outputTtlSeconds": 30}}},
        "/config/fal/outputTtlSeconds",
    ),
    "delete-after-copy as a word": (
        {"config": {"fal": {"deleteAfterCopy": "yes"}}},
        "/config/fal/deleteAfterCopy",
    ),
    "object store port out of range": (
        {"networkPolicy": {"output": {"ports": [70000]}}},
        "/networkPolicy/output/ports/0",
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
    "deleting fal's files without a copy": (
        {"config": {"fal": {"deleteAfterCopy": True}}},
        "config.fal.deleteAfterCopy needs config.output.url",
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
