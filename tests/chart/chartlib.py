"""Rendering and validating the Helm chart offline, shared by the tests in tests/chart.

Rendering goes through helm-python-sdk, which binds Helm's Go SDK (the same engine as
`helm template`) as a shared library: no helm binary, no cluster, no network. Every rendered
object is then checked against the Kubernetes OpenAPI schemas that kubernetes-validate ships
(strict: unknown fields are errors) for two Kubernetes versions, and the custom resources
(ServiceMonitor, PrometheusRule, ScaledObject), which have no schema there, against small
schemas derived from their CRDs in tests/chart/schemas/.
"""

from __future__ import annotations

import base64
import functools
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "lynx-relay"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
RELEASE = "demo"
NAMESPACE = "relay"
FULLNAME = f"{RELEASE}-lynx-relay"

# The oldest and newest minor versions we vouch for: 1.31 (still in the big providers' extended
# support) and 1.34. kubernetes-validate ships schemas for 1.25 through 1.37.
KUBERNETES_VERSIONS = ("1.31.0", "1.34.0")

# B's monitoring content, included by the chart with .Files.Get.
ALERTS_FILE = CHART / "files" / "alerts.yaml"
DASHBOARD_FILE = CHART / "files" / "dashboard.json"

# Where the rendered alerts' runbook_url point in the tests.
RUNBOOK_BASE_URL = "https://git.example.com/video/lynx-relay/blob/v0.1.0"

Manifest = dict[str, Any]
Values = dict[str, Any]

# Custom resources have no schema in kubernetes-validate; each is checked against a schema
# derived from its CRD instead. A kind in neither place fails validation (never skipped).
CRD_SCHEMA_FILES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
}


@functools.cache
def _chart() -> helm.Chart:
    # The real chart is loaded once and kept for the session (an immutable native handle).
    return helm.Chart.load(CHART)


def render_files(
    values: Mapping[str, Any] | None = None, chart_dir: Path = CHART
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template demo -n relay` would produce.

    Raises helm.HelmValuesError when values.schema.json refuses the values, and
    helm.HelmRenderError when a template fails (e.g. one of the chart's `fail` checks).
    """
    options: dict[str, Any] = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True}
    if chart_dir == CHART:
        return _chart().render(dict(values or {}), **options)
    with helm.Chart.load(chart_dir) as chart:  # a modified copy, used once
        return chart.render(dict(values or {}), **options)


def render(values: Mapping[str, Any] | None = None, chart_dir: Path = CHART) -> list[Manifest]:
    """The Kubernetes objects the chart renders with ``values`` (NOTES.txt left out)."""
    objects: list[Manifest] = []
    for path, text in sorted(render_files(values, chart_dir).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def notes(values: Mapping[str, Any] | None = None) -> str:
    """The rendered NOTES.txt."""
    return next(text for path, text in render_files(values).items() if path.endswith("NOTES.txt"))


def find(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of ``kind`` (and ``name``, if given); fails the test if there is not one."""
    found = of_kind(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def of_kind(objects: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def deployment(objects: list[Manifest]) -> Manifest:
    return find(objects, "Deployment")


def relay_container(objects: list[Manifest]) -> Manifest:
    containers: list[Manifest] = deployment(objects)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "relay")


def merge(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> Values:
    """Deep-merge value overrides into ``base`` (later wins), like repeated ``-f`` files."""
    merged: Values = json.loads(json.dumps(base))
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = json.loads(json.dumps(value))
    return merged


@functools.cache
def _crd_schema(filename: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / filename).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def validate(obj: Manifest, kubernetes_version: str) -> None:
    """Raise if ``obj`` is not a valid object for ``kubernetes_version``.

    Built-in kinds: kubernetes-validate in strict mode (unknown fields are errors, as with
    `kubectl apply --validate=strict`). Custom resources: the vendored CRD-derived schemas.
    A kind found in neither raises kubernetes_validate's SchemaNotFoundError.
    """
    crd_file = CRD_SCHEMA_FILES.get((obj["apiVersion"], obj["kind"]))
    if crd_file is not None:
        jsonschema.Draft202012Validator(_crd_schema(crd_file)).validate(obj)
        return
    kubernetes_validate.validate(obj, kubernetes_version, strict=True)


def container_environment(
    objects: list[Manifest],
    *,
    pod_name: str = f"{FULLNAME}-7d9c8b6f5-x2x9q",
    external: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """The relay container's environment as the kubelet would build it from ``objects``.

    envFrom ConfigMaps and Secrets first, then `env` (which wins), resolving the downward API
    (metadata.name -> ``pod_name``) and secretKeyRefs. Objects the chart does not render (an
    existing Secret, an extra ConfigMap) come from ``external`` as ``{name: {key: value}}``. A
    secretKeyRef that resolves nowhere fails, as the pod would not start.
    """
    external = external or {}

    def secret_value(name: str, key: str) -> str:
        for secret in of_kind(objects, "Secret", name):
            return base64.b64decode(secret["data"][key]).decode()
        return external[name][key]

    container = relay_container(objects)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            for config_map in of_kind(objects, "ConfigMap", name):
                env.update(config_map["data"])
            env.update(external.get(name, {}))
        else:
            name = source["secretRef"]["name"]
            for secret in of_kind(objects, "Secret", name):
                env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
            env.update(external.get(name, {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[var["name"]] = pod_name
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secret_value(ref["name"], ref["key"])
    return env


def copy_chart(destination: Path, files: Mapping[str, str] | None = None) -> Path:
    """A copy of the chart under ``destination``, with ``files`` (relative path -> text) written
    into it, or removed where the text is empty. For tests that must not touch the real chart."""
    copied = destination / "lynx-relay"
    shutil.copytree(CHART, copied)
    for relative, text in (files or {}).items():
        path = copied / relative
        if text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        else:
            path.unlink(missing_ok=True)
    return copied


def leaf_paths(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of every leaf of ``values``: scalars, lists and empty mappings."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path


# The tenants file of the "everything" scenario: the README's example, both top-level keys.
EVERYTHING_TENANTS: Values = {
    "default": {"weight": 1},
    "tenants": {
        "checkout": {"weight": 3, "max_concurrent": 4, "priorities": ["high", "normal", "low"]},
        "batch": {"weight": 0.5, "priorities": ["normal", "low"]},
    },
}

# Value sets the render tests go through; each is validated for every Kubernetes version.
SCENARIOS: dict[str, Values] = {
    "default": {},
    "keda": {"autoscaling": {"keda": {"enabled": True}}},
    "keda-kafka-and-prometheus": {
        "autoscaling": {
            "keda": {
                "enabled": True,
                "fallbackReplicas": 2,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}},
                "prometheus": {"enabled": True},
            }
        },
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "hpa": {
        "autoscaling": {
            "hpa": {
                "enabled": True,
                "targetMemoryUtilizationPercentage": 80,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
            }
        }
    },
    "service-monitor": {
        "metrics": {
            "serviceMonitor": {
                "enabled": True,
                "labels": {"release": "kube-prometheus-stack"},
                "scrapeTimeout": "10s",
                "metricRelabelings": [
                    {"action": "drop", "sourceLabels": ["__name__"], "regex": "python_gc_.*"}
                ],
            }
        }
    },
    "fal-key": {"secrets": {"falKey": "fal-test-key"}},
    # No ledger checkpoint: no volume, no mount, no RELAY_LEDGER_CHECKPOINT_* variable.
    "ledger-checkpoint-off": {"config": {"relay": {"ledgerCheckpoint": {"enabled": False}}}},
    "existing-secret": {
        "secrets": {
            "existingSecret": "relay-credentials",
            "keys": {"falKey": "FAL_KEY", "kafkaSaslPassword": "SASL_PASSWORD"},
        }
    },
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "kafka": {
                "to": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}}}
                ]
            },
            "extraEgress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}],
        }
    },
    # Output storage on an S3-compatible store in the cluster (MinIO): keys from a Secret,
    # egress to the endpoint's own port and namespace only.
    "output-s3-compatible": {
        "config": {
            "output": {
                "url": "s3://videos/lynx/",
                "endpointUrl": "http://minio.storage.svc:9000",
                "region": "us-east-1",
                "credentialsSecret": "relay-output-credentials",
            },
            "fal": {"deleteAfterCopy": True},
        },
        "secrets": {"falKey": "fal-test-key"},
        "networkPolicy": {
            "enabled": True,
            "output": {
                "to": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "storage"}
                        }
                    }
                ]
            },
        },
    },
    # Output storage on AWS S3 with IRSA: the role on the ServiceAccount, no Secret.
    "output-s3-irsa": {
        "config": {
            "output": {"url": "s3://videos", "eventUrl": "presigned", "presignTtlSeconds": 3600}
        },
        "serviceAccount": {
            "annotations": {
                "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/lynx-relay"
            }
        },
        "secrets": {"falKey": "fal-test-key"},
        "networkPolicy": {"enabled": True},
    },
    "sasl": {
        "config": {
            "kafka": {
                "bootstrapServers": "kafka-bootstrap.kafka.svc:9093",
                "securityProtocol": "SASL_SSL",
                "sasl": {"mechanism": "SCRAM-SHA-512", "username": "lynx-relay"},
                "tls": {"caSecret": {"name": "kafka-cluster-ca-cert", "key": "ca.crt"}},
            }
        },
        "secrets": {"falKey": "fal-test-key", "kafkaSaslPassword": "sasl-test-password"},
    },
    "sasl-existing-secret-ca-configmap-keda": {
        "config": {
            "kafka": {
                "securityProtocol": "SASL_SSL",
                "sasl": {"mechanism": "SCRAM-SHA-512", "username": "lynx-relay"},
                "tls": {"caConfigMap": {"name": "kafka-ca-bundle", "key": "bundle.pem"}},
            }
        },
        "secrets": {"existingSecret": "relay-credentials"},
        "autoscaling": {"keda": {"enabled": True, "kafka": {"authenticationRef": "kafka-sasl"}}},
    },
    "everything": {
        "fullnameOverride": "lynx",
        "commonLabels": {"team": "video"},
        "commonAnnotations": {"owner": "video@example.com"},
        "image": {
            "registry": "registry.example.com",
            "repository": "team/lynx-relay",
            "digest": "sha256:" + "ab" * 32,
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "config": {
            "kafka": {
                "securityProtocol": "SSL",
                "tls": {
                    "caFile": "/etc/ssl/certs/ca.pem",
                    "certFile": "/etc/kafka-client/tls.crt",
                    "keyFile": "/etc/kafka-client/tls.key",
                },
            },
            "fal": {
                "queueUrl": "http://127.0.0.1:8470",
                "endpoint": "bytedance/lynx",
                "maxConnections": 32,
                "outputTtlSeconds": 1209600,
                "deleteAfterCopy": True,
                "storeIo": False,
            },
            "output": {
                "url": "s3://videos/lynx/",
                "endpointUrl": "https://storage.example.com:8443",
                "region": "europe-west4",
                "keyTemplate": "{date}/{tenant}/{request_id}-{fal_request_id}.mp4",
                "eventUrl": "presigned",
                "presignTtlSeconds": 86400,
                "maxCopies": 8,
                "partMib": 16,
                "retrySeconds": 300.5,
                "onFailure": "fal_url",
                "credentialsSecret": "relay-output-credentials",
            },
            "relay": {
                "jobsTopicReplication": 3,
                "topicsReplication": 3,
                "sessionTimeoutSeconds": 45,
                "dedupeRetentionSeconds": 6048000,
                "ledgerScope": "owned",
                "ledgerCheckpoint": {
                    "intervalSeconds": 120.5,
                    "maxAgeSeconds": 86400,
                    "sizeLimit": "2Gi",
                },
                "pricePerVideoSecond": 0.65,
                "staticMembership": False,
                "watchMode": "webhook",
                "progressTopic": "lynx.progress",
                "imageUrlAllowedHosts": "cdn.example.com",
                "webhookUrl": "https://relay.example.com/fal/webhook",
                "falConcurrency": 6,
                "backlogMaxRequests": 50000,
                "backlogBodyBytes": 33554432,
                "priorityAgingSeconds": 120.5,
                "tenants": EVERYTHING_TENANTS,
            },
        },
        "webhookIngress": {
            "enabled": True,
            "className": "nginx",
            "host": "relay.example.com",
            "tls": [{"secretName": "relay-tls", "hosts": ["relay.example.com"]}],
        },
        "serviceAccount": {"create": False, "name": "lynx-relay-sa"},
        "podAnnotations": {"example.com/scrape": "false"},
        "podLabels": {"tier": "backend"},
        "tmpVolume": {"medium": "Memory", "sizeLimit": "32Mi"},
        "extraEnvVars": [{"name": "EXTRA", "value": "1"}],
        "extraEnvVarsCM": "relay-extra",
        "extraEnvVarsSecret": "relay-extra-secret",
        "extraVolumes": [{"name": "certs", "configMap": {"name": "certs"}}],
        "extraVolumeMounts": [
            {"name": "certs", "mountPath": "/etc/ssl/certs/ca.pem", "subPath": "ca.pem"}
        ],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "video", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {
                                "matchLabels": {"app.kubernetes.io/name": "lynx-relay"}
                            },
                        },
                    }
                ]
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
            }
        ],
        "priorityClassName": "high",
        "service": {"annotations": {"example.com/internal": "true"}},
        "pdb": {"minAvailable": "50%"},
        "networkPolicy": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True, "namespace": "monitoring"}},
        "secrets": {"falKey": "fal-test-key", "annotations": {"example.com/rotate": "90d"}},
    },
}


def monitoring_values() -> Values:
    """ServiceMonitor, PrometheusRule and the dashboard ConfigMap, all on."""
    return {
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "kube-prometheus-stack"},
                "runbookBaseUrl": RUNBOOK_BASE_URL,
            },
            "dashboard": {"enabled": True},
        }
    }


def monitoring_files_present() -> bool:
    return ALERTS_FILE.is_file() and DASHBOARD_FILE.is_file()
