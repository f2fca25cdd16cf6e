"""The relay's pods: hardened, probed, and given every setting the relay reads.

- Pod and container run as the image's numeric non-root user with a read-only root
  filesystem, no privilege escalation, no capabilities and the RuntimeDefault seccomp
  profile; /tmp and the ledger checkpoint's folder (emptyDirs) are the only writable paths.
- Liveness is /livez, readiness and startup are /readyz, on the port named http (8000).
- The pod name reaches the relay as RELAY_GROUP_INSTANCE_ID through the downward API.
- terminationGracePeriodSeconds covers RELAY_SHUTDOWN_GRACE_S.
- Every setting in the README's tables can be set through values, and the environment the
  chart builds is one the relay's own settings loader accepts.
- config.relay.tenants becomes the tenants file (a ConfigMap mounted read-only, named by
  RELAY_TENANTS_FILE) that the relay's own loader accepts; changing it rolls the pods.
"""

from __future__ import annotations

import re
from pathlib import Path

import helm_python as helm
import pytest

from service.config import Settings, load_settings
from service.tenants import Tenants, load_tenants
from tests.chart import chartlib
from tests.chart.chartlib import (
    FULLNAME,
    ROOT,
    SCENARIOS,
    container_environment,
    deployment,
    find,
    relay_container,
    render,
)

DEFAULT = render()
UID = 10001


def test_pod_security_context_is_non_root_with_runtime_default_seccomp() -> None:
    """The pod runs as user and group 10001, non-root, under RuntimeDefault seccomp."""
    pod = deployment(DEFAULT)["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == UID
    assert context["runAsGroup"] == UID
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_container_security_context_is_locked_down() -> None:
    """The container cannot write its root filesystem, gain privileges or use capabilities."""
    context = relay_container(DEFAULT)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == UID
    assert context["runAsGroup"] == UID
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_only_tmp_and_the_ledger_checkpoint_are_writable() -> None:
    """The writable mounts are emptyDirs on /tmp and on the ledger checkpoint's folder (none
    but /tmp without the checkpoint); any other mount is read-only."""
    for scenario, expected in (
        ("sasl", {"/tmp": "64Mi", "/var/lib/lynx-relay/ledger": "1Gi"}),  # noqa: S108
        ("ledger-checkpoint-off", {"/tmp": "64Mi"}),  # noqa: S108 - the pod's mount path
    ):
        pod = deployment(render(SCENARIOS[scenario]))["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = pod["containers"][0]["volumeMounts"]
        writable = {m["mountPath"]: m["name"] for m in mounts if not m.get("readOnly")}
        limits = {path: volumes[name]["emptyDir"]["sizeLimit"] for path, name in writable.items()}
        assert limits == expected, scenario


def test_no_service_account_token_and_no_service_links() -> None:
    """The relay never calls the Kubernetes API, so no token is mounted; Service links are off
    so no Service can inject a variable such as RELAY_HTTP_PORT into the environment."""
    pod = deployment(DEFAULT)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["serviceAccountName"] == FULLNAME
    assert find(DEFAULT, "ServiceAccount")["automountServiceAccountToken"] is False


def test_probes_use_the_ops_endpoints() -> None:
    """Liveness asks /livez, readiness and startup ask /readyz, all on the http port."""
    container = relay_container(DEFAULT)
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # The startup probe gives the relay minutes to connect and read its ledger before the
    # liveness probe may restart it.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_probes_can_be_disabled() -> None:
    """A probe with enabled: false is left out (and `enabled` never reaches the manifest)."""
    off = {"enabled": False}
    container = relay_container(render({"startupProbe": off, "livenessProbe": off}))
    assert "startupProbe" not in container
    assert "livenessProbe" not in container
    assert "enabled" not in container["readinessProbe"]


def test_resources_are_set() -> None:
    """Requests and a memory limit are set by default."""
    resources = relay_container(DEFAULT)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]


def test_pod_name_is_the_group_instance_id() -> None:
    """RELAY_GROUP_INSTANCE_ID comes from the pod's own name (downward API), for static
    group membership; staticMembership: false leaves it out."""
    env = {e["name"]: e for e in relay_container(DEFAULT)["env"]}
    assert env["RELAY_GROUP_INSTANCE_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    off = render({"config": {"relay": {"staticMembership": False}}})
    assert "RELAY_GROUP_INSTANCE_ID" not in {e["name"] for e in relay_container(off)["env"]}


def test_termination_grace_covers_the_relay_shutdown_grace() -> None:
    """SIGKILL comes only after the relay's own hand-off window, with room for the final
    commit and leaving the group."""
    pod = deployment(DEFAULT)["spec"]["template"]["spec"]
    grace = float(find(DEFAULT, "ConfigMap", FULLNAME)["data"]["RELAY_SHUTDOWN_GRACE_S"])
    assert grace == 10
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["terminationGracePeriodSeconds"] >= grace + 10


def test_a_termination_grace_shorter_than_the_shutdown_grace_is_refused() -> None:
    """Values that would SIGKILL the relay mid hand-off fail the render, naming both."""
    values = {
        "terminationGracePeriodSeconds": 10,
        "config": {"relay": {"shutdownGraceSeconds": 20}},
    }
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render(values)


def test_replicas_follow_replica_count_without_an_autoscaler() -> None:
    """Without HPA or KEDA the Deployment has replicaCount replicas."""
    assert deployment(DEFAULT)["spec"]["replicas"] == 2
    assert deployment(render({"replicaCount": 5}))["spec"]["replicas"] == 5


@pytest.mark.parametrize("autoscaler", ["hpa", "keda"])
def test_no_replicas_field_under_an_autoscaler(autoscaler: str) -> None:
    """With HPA or KEDA the Deployment has no `replicas`: an upgrade must not reset the count
    the autoscaler chose."""
    objects = render({"autoscaling": {autoscaler: {"enabled": True}}})
    assert "replicas" not in deployment(objects)["spec"]


def test_config_changes_roll_the_pods() -> None:
    """A setting change changes the pod template (a checksum annotation): env vars are read
    only at start, so the pods must be replaced to see it."""

    def checksum(values: chartlib.Values) -> str:
        annotations = deployment(render(values))["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    assert checksum({}) != checksum({"config": {"relay": {"maxInFlight": 16}}})


def test_image_defaults_to_the_app_version_and_accepts_a_digest() -> None:
    """The image tag defaults to appVersion; a digest wins over the tag."""
    assert relay_container(DEFAULT)["image"] == "lynx-relay:0.1.0"
    container = relay_container(render(SCENARIOS["everything"]))
    assert container["image"] == "registry.example.com/team/lynx-relay@sha256:" + "ab" * 32


def test_topology_spread_constraints_get_the_pod_selector() -> None:
    """A spread constraint given without a labelSelector spreads this release's pods."""
    pod = deployment(render(SCENARIOS["everything"]))["spec"]["template"]["spec"]
    (constraint,) = pod["topologySpreadConstraints"]
    assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "demo"


def test_service_exposes_the_metrics_port() -> None:
    """The Service's port is named http, is 8000, and selects exactly the relay's pods."""
    service = find(DEFAULT, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    pod_labels = deployment(DEFAULT)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_pdb_selects_the_relay_pods() -> None:
    """The PodDisruptionBudget covers the relay's pods and lets one go at a time."""
    pdb = find(DEFAULT, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    selector = deployment(DEFAULT)["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert find(render(SCENARIOS["everything"]), "PodDisruptionBudget")["spec"] == {
        "minAvailable": "50%",
        "selector": {"matchLabels": selector},
    }


def test_helm_test_pod_checks_readyz_with_the_relay_image() -> None:
    """The `helm test` hook runs the relay image's Python against /readyz of the Service, as
    hardened as the relay, and is not selected by the Service or the PDB."""
    pod = find(DEFAULT, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == relay_container(DEFAULT)["image"]
    assert container["command"][:2] == ["python", "-c"]
    assert container["command"][-1] == f"http://{FULLNAME}.relay.svc:8000/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == UID
    assert pod["spec"]["restartPolicy"] == "Never"
    service_selector = find(DEFAULT, "Service")["spec"]["selector"]
    assert not service_selector.items() <= pod["metadata"]["labels"].items()


def test_helm_test_can_be_disabled() -> None:
    """tests.enabled: false renders no test pod."""
    assert chartlib.of_kind(render({"tests": {"enabled": False}}), "Pod") == []


def _readme_settings() -> set[str]:
    """The variables named in the first column of the README's settings tables."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Settings", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_every_readme_setting_can_be_set_by_the_chart() -> None:
    """Each variable of the README's settings tables (which are the relay's settings) is
    produced by the chart, given values that use every option."""
    assert _readme_settings() == {name.upper() for name in Settings.model_fields}
    produced: set[str] = set()
    for scenario in ("default", "sasl", "fal-key", "everything"):
        produced |= set(container_environment(render(SCENARIOS[scenario]), external=_EXTERNAL))
    assert _readme_settings() - produced == set()


_EXTERNAL = {
    "relay-credentials": {"fal-key": "fal-from-existing", "kafka-sasl-password": "pw"},
    "relay-extra": {"EXTRA_FROM_CM": "1"},
    "relay-extra-secret": {"EXTRA_FROM_SECRET": "1"},
}


def test_default_environment_is_accepted_by_the_relay() -> None:
    """The default environment loads with the relay's own settings loader and means the
    README's defaults (the fal key aside, which the default leaves to the operator)."""
    env = container_environment(render(SCENARIOS["fal-key"]))
    settings = load_settings(env)
    assert settings.relay_dedupe_retention_s == 604800
    assert settings.relay_max_in_flight == 8
    assert settings.relay_http_port == 8000
    assert settings.relay_group_instance_id == f"{FULLNAME}-7d9c8b6f5-x2x9q"
    assert settings.fal_key_value == "fal-test-key"
    assert settings.relay_price_per_video_second == pytest.approx(0.6)
    assert settings.relay_jobs_topic_replication is None  # unset: the relay picks
    assert settings.relay_session_timeout_s is None
    assert settings.relay_ledger_checkpoint_dir == Path("/var/lib/lynx-relay/ledger")
    assert settings.relay_ledger_checkpoint_interval_s == 300
    assert settings.relay_ledger_checkpoint_max_age_s == 43200


def test_sasl_environment_is_accepted_by_the_relay(tmp_path: Path) -> None:
    """SASL_SSL with SCRAM-SHA-512 and a CA from a Secret: the relay gets the mechanism,
    username, password (from the Secret) and the path of the mounted CA bundle."""
    objects = render(SCENARIOS["sasl"])
    env = container_environment(objects)
    assert env["KAFKA_SSL_CAFILE"] == "/etc/lynx-relay/kafka-ca/ca.crt"
    # The bundle is mounted there in the pod; here a stand-in file takes its place.
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    settings = load_settings({**env, "KAFKA_SSL_CAFILE": str(ca)})
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_username == "lynx-relay"
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "sasl-test-password"
    pod = deployment(objects)["spec"]["template"]["spec"]
    (ca_volume,) = [v for v in pod["volumes"] if v["name"] == "kafka-ca"]
    assert ca_volume["secret"]["secretName"] == "kafka-cluster-ca-cert"


def test_ca_bundle_from_a_config_map() -> None:
    """caConfigMap mounts the bundle from a ConfigMap under its own key."""
    objects = render(SCENARIOS["sasl-existing-secret-ca-configmap-keda"])
    env = container_environment(objects, external=_EXTERNAL)
    assert env["KAFKA_SSL_CAFILE"] == "/etc/lynx-relay/kafka-ca/bundle.pem"
    pod = deployment(objects)["spec"]["template"]["spec"]
    (ca_volume,) = [v for v in pod["volumes"] if v["name"] == "kafka-ca"]
    assert ca_volume["configMap"]["name"] == "kafka-ca-bundle"


def test_every_option_environment_is_accepted_by_the_relay(tmp_path: Path) -> None:
    """With nearly every option set, numbers keep a form the relay parses (6048000 is not
    rendered as 6.048e+06) and the optional settings appear, the tenants file among them (its
    rendered text stands in for the mounted file)."""
    objects = render(SCENARIOS["everything"])
    env = container_environment(objects, external=_EXTERNAL)
    assert env["RELAY_DEDUPE_RETENTION_S"] == "6048000"
    assert env["RELAY_LEDGER_SCOPE"] == "owned"
    assert env["RELAY_JOBS_TOPIC_REPLICATION"] == "3"
    assert env["RELAY_SESSION_TIMEOUT_S"] == "45"
    assert env["EXTRA"] == env["EXTRA_FROM_CM"] == env["EXTRA_FROM_SECRET"] == "1"
    assert "RELAY_GROUP_INSTANCE_ID" not in env
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    assert (env["KAFKA_SSL_CERTFILE"], env["KAFKA_SSL_KEYFILE"]) == (
        "/etc/kafka-client/tls.crt",
        "/etc/kafka-client/tls.key",
    )
    assert env["RELAY_FAL_CONCURRENCY"] == "6"
    assert env["RELAY_BACKLOG_BODY_BYTES"] == "33554432"
    assert env["RELAY_TENANTS_FILE"] == TENANTS_FILE
    assert env["RELAY_LEDGER_CHECKPOINT_INTERVAL_S"] == "120.5"
    assert env["RELAY_LEDGER_CHECKPOINT_MAX_AGE_S"] == "86400"
    files = {
        "KAFKA_SSL_CAFILE": str(ca),
        "KAFKA_SSL_CERTFILE": str(ca),
        "KAFKA_SSL_KEYFILE": str(ca),
        "RELAY_TENANTS_FILE": _tenants_file_in(tmp_path, objects),
    }
    settings = load_settings({**env, **files})
    assert settings.relay_session_timeout_s == 45
    assert settings.relay_price_per_video_second == pytest.approx(0.65)
    assert settings.fal_endpoint == "bytedance/lynx"
    assert settings.relay_fal_concurrency == 6
    assert settings.relay_backlog_max_requests == 50000
    assert settings.relay_priority_aging_s == pytest.approx(120.5)
    assert settings.tenants.policy("checkout").weight == 3
    assert settings.relay_ledger_checkpoint_interval_s == pytest.approx(120.5)
    assert settings.relay_ledger_checkpoint_max_age_s == 86400


TENANTS_FILE = "/etc/lynx-relay/tenants/tenants.yaml"


def _tenants_file_in(folder: Path, objects: list[chartlib.Manifest]) -> str:
    """The tenants.yaml of the ConfigMap the pod mounts, written under ``folder``: a stand-in
    for the mounted file."""
    pod = deployment(objects)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tenants"]
    text = find(objects, "ConfigMap", volume["configMap"]["name"])["data"]["tenants.yaml"]
    path = folder / "tenants.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_tenants_file_is_rendered_mounted_and_accepted_by_the_relay(tmp_path: Path) -> None:
    """config.relay.tenants becomes tenants.yaml in a ConfigMap of its own, mounted read-only
    where RELAY_TENANTS_FILE points, with the same structure the relay reads: its own loader
    (service.tenants.load_tenants) accepts the rendered file and sees the same policies."""
    tenants = chartlib.EVERYTHING_TENANTS
    objects = render({"config": {"relay": {"tenants": tenants, "falConcurrency": 4}}})
    config_map = find(objects, "ConfigMap", f"{FULLNAME}-tenants")
    assert set(config_map["data"]) == {"tenants.yaml"}
    pod = deployment(objects)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tenants"]
    assert volume["configMap"]["name"] == f"{FULLNAME}-tenants"
    (mount,) = [m for m in relay_container(objects)["volumeMounts"] if m["name"] == "tenants"]
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount would pin the file's first version
    env = container_environment(objects)
    assert env["RELAY_TENANTS_FILE"] == f"{mount['mountPath']}/tenants.yaml" == TENANTS_FILE
    assert env["RELAY_FAL_CONCURRENCY"] == "4"

    loaded = load_tenants(_tenants_file_in(tmp_path, objects))
    assert loaded == Tenants.model_validate(tenants)
    assert loaded.policy("checkout").max_concurrent == 4
    assert loaded.policy("batch").weight == 0.5
    assert loaded.policy("someone-else") == loaded.default
    assert loaded.labels() == ["batch", "checkout", "default", "other"]


def test_without_tenants_there_is_no_file_and_no_cap() -> None:
    """By default no tenants ConfigMap, volume or RELAY_TENANTS_FILE (every tenant alike),
    and RELAY_FAL_CONCURRENCY is unset (falConcurrency 0): each replica runs maxInFlight. The
    backlog and aging settings carry the relay's defaults."""
    assert chartlib.of_kind(DEFAULT, "ConfigMap", f"{FULLNAME}-tenants") == []
    pod = deployment(DEFAULT)["spec"]["template"]["spec"]
    assert "tenants" not in {v["name"] for v in pod["volumes"]}
    env = container_environment(DEFAULT)
    assert not {"RELAY_TENANTS_FILE", "RELAY_FAL_CONCURRENCY"} & set(env)
    assert env["RELAY_BACKLOG_MAX_REQUESTS"] == "100000"
    assert env["RELAY_BACKLOG_BODY_BYTES"] == "8388608"
    assert env["RELAY_PRIORITY_AGING_S"] == "300"
    annotations = deployment(DEFAULT)["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/tenants" not in annotations


def test_a_tenants_change_rolls_the_pods() -> None:
    """The relay reads the tenants file once, at start: a change of a tenant's policy changes
    the pod template (checksum/tenants) so the pods are replaced."""

    def checksum(weight: float) -> str:
        values = {"config": {"relay": {"tenants": {"tenants": {"checkout": {"weight": weight}}}}}}
        annotations = deployment(render(values))["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/tenants"]
        return value

    assert checksum(3) != checksum(4)


def test_sasl_settings_are_left_out_without_sasl() -> None:
    """With PLAINTEXT the SASL variables are not set at all (not even empty)."""
    env = container_environment(DEFAULT)
    assert not {"KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"} & set(env)
    assert "KAFKA_SSL_CAFILE" not in env
