"""The optional NetworkPolicy allows exactly what the relay needs.

Egress: DNS, the Kafka broker ports (optionally to given peers only) and TCP 443 for fal.
Ingress: the http port (8000) from a configurable selector (Prometheus by default) and from
the `helm test` pod.
"""

from __future__ import annotations

from tests.chart.chartlib import SCENARIOS, deployment, find, of_kind, render


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
