"""The optional NetworkPolicy allows exactly what the relay needs.

Egress: DNS, the Kafka broker ports (optionally to given peers only), TCP 443 for fal, and,
with output storage on, the object store's ports (optionally to given peers only).
Ingress: the http port (8000) from a configurable selector (Prometheus by default) and from
the `helm test` pod.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.chartlib import SCENARIOS, Manifest, deployment, find, merge, of_kind, render


def test_off_by_default() -> None:
    """No NetworkPolicy unless enabled: a cluster without a CNI that enforces them, or with
    its own policies, is not surprised."""
    assert of_kind(render(), "NetworkPolicy") == []


def test_egress_to_dns_kafka_and_https_only() -> None:
    """Egress rules: DNS on 53, Kafka ports to the given peers, 443 anywhere, plus extras."""
    objects = render(SCENARIOS["network-policy"])
    policy = find(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    pod_labels = deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    dns, kafka, https, extra = policy["egress"]
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert kafka["ports"] == [{"port": 9092, "protocol": "TCP"}, {"port": 9093, "protocol": "TCP"}]
    assert kafka["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}}}
    ]
    assert https == {"ports": [{"port": 443, "protocol": "TCP"}]}
    assert extra == {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}


def test_ingress_to_the_http_port_from_prometheus_and_the_test_pod() -> None:
    """Only the http port is open, to the configured peers and to the `helm test` pod."""
    objects = render(SCENARIOS["network-policy"])
    (ingress,) = find(objects, "NetworkPolicy")["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    prometheus, test_pod = ingress["from"]
    assert prometheus["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    test_labels = find(objects, "Pod")["metadata"]["labels"]
    assert test_pod["podSelector"]["matchLabels"].items() <= test_labels.items()


def test_ingress_selector_is_configurable() -> None:
    """networkPolicy.ingress.from replaces the default peers."""
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    values = {"networkPolicy": {"enabled": True, "ingress": {"from": peers}}}
    (ingress,) = find(render(values), "NetworkPolicy")["spec"]["ingress"]
    assert ingress["from"][0] == peers[0]
    assert len(ingress["from"]) == 2


def _store_rule(values: dict[str, Any]) -> Manifest:
    """The egress rule after DNS, Kafka and fal's 443: the object store's."""
    egress = find(render(values), "NetworkPolicy")["spec"]["egress"]
    assert len(egress) == 4, egress
    rule: Manifest = egress[3]
    return rule


def test_no_store_egress_without_output_storage() -> None:
    """With config.output.url empty, networkPolicy.output adds nothing (not even when ports
    or peers are given): DNS, Kafka and 443 only."""
    values = {"networkPolicy": {"enabled": True, "output": {"ports": [9000]}}}
    egress = find(render(values), "NetworkPolicy")["spec"]["egress"]
    assert len(egress) == 3
    assert all(rule["ports"][0]["port"] in {53, 9092, 443} for rule in egress)


def test_store_egress_to_an_s3_compatible_endpoint() -> None:
    """An in-cluster MinIO: the endpoint's own port (9000), to the peers given only."""
    rule = _store_rule(SCENARIOS["output-s3-compatible"])
    assert rule == {
        "ports": [{"port": 9000, "protocol": "TCP"}],
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}}}],
    }


def test_store_egress_to_the_cloud_store_is_https() -> None:
    """S3 itself (no endpoint): TCP 443 to anywhere, whether or not fal's 443 is allowed."""
    assert _store_rule(SCENARIOS["output-s3-irsa"]) == {"ports": [{"port": 443, "protocol": "TCP"}]}
    no_fal = merge(SCENARIOS["output-s3-irsa"], {"networkPolicy": {"fal": {"allowHttps": False}}})
    egress = find(render(no_fal), "NetworkPolicy")["spec"]["egress"]
    assert egress[-1] == {"ports": [{"port": 443, "protocol": "TCP"}]}
    assert len(egress) == 3  # DNS, Kafka, the store


@pytest.mark.parametrize(
    ("endpoint", "port"),
    [
        ("https://s3.storage.example.com", 443),
        ("http://minio.storage.svc", 80),
        ("https://r2.example.com:8443/", 8443),
        ("http://[fd00::10]:9000", 9000),
    ],
)
def test_store_port_follows_the_endpoint(endpoint: str, port: int) -> None:
    """Without networkPolicy.output.ports, the port is the endpoint's: its own, else 443 for
    https and 80 for http."""
    values = {
        "config": {"output": {"url": "s3://videos", "endpointUrl": endpoint}},
        "networkPolicy": {"enabled": True},
    }
    assert _store_rule(values)["ports"] == [{"port": port, "protocol": "TCP"}]


def test_store_ports_and_cidrs_are_configurable() -> None:
    """networkPolicy.output.ports replaces the derived port; `to` takes ipBlocks (CIDRs)."""
    cidrs = [{"ipBlock": {"cidr": "10.20.0.0/16"}}, {"ipBlock": {"cidr": "192.0.2.10/32"}}]
    values = {
        "config": {"output": {"url": "s3://videos", "endpointUrl": "http://ceph.example.com:7480"}},
        "networkPolicy": {"enabled": True, "output": {"ports": [7480, 7443], "to": cidrs}},
    }
    assert _store_rule(values) == {
        "ports": [{"port": 7480, "protocol": "TCP"}, {"port": 7443, "protocol": "TCP"}],
        "to": cidrs,
    }


def test_output_storage_alone_renders_no_policy() -> None:
    """Output storage does not switch the NetworkPolicy on by itself."""
    assert of_kind(render({"config": {"output": {"url": "s3://videos"}}}), "NetworkPolicy") == []
