"""The CRD, served by a real API server: validation errors name the field; printer columns work."""

from __future__ import annotations

from typing import Any

import pytest

from ..support.kube import Cluster, node


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"endpoint": "http://lexamoris-server:8766"}, "spec.endpoint must be a ws:// or wss:// URL"),
        ({"topic": "bad topic!"}, "spec.topic"),
        ({"topic": ".."}, "spec.topic must not be '.' or '..'"),
        ({"anchor": None}, "spec.anchor: Required value"),
        ({"frequencyHz": 0}, "spec.frequencyHz in body should be greater than 0"),
        ({"ackMode": "sometimes"}, 'spec.ackMode: Unsupported value: "sometimes"'),
        ({"replicas": -1}, "spec.replicas in body should be greater than or equal to 0"),
        ({"startFrom": "middle"}, 'spec.startFrom: Unsupported value: "middle"'),
        ({"template": {"spec": {"containers": []}}}, 'unknown field "spec.template.spec.containers"'),
        ({"tls": {"insecureSkipVerify": True}}, "spec.tls needs a wss:// endpoint"),
        (
            {
                "endpoint": "wss://lexamoris-server:8766",
                "tls": {"insecureSkipVerify": True, "caSecretRef": {"name": "ca", "key": "ca.crt"}},
            },
            "spec.tls: insecureSkipVerify contradicts caSecretRef",
        ),
        ({"tls": {"caSecretRef": {"name": "ca"}}}, "spec.tls.caSecretRef.key: Required value"),
        (
            {"kafka": {"sasl": {"mechanism": "SCRAM-SHA-512", "username": "u"}}},
            "spec.kafka.sasl.passwordSecretRef: Required value",
        ),
        (
            {"kafka": {"sasl": {"mechanism": "PLAIN", "passwordSecretRef": {"name": "p", "key": "k"}}}},
            "spec.kafka.sasl: set username or usernameSecretRef (one of them)",
        ),
        (
            {
                "kafka": {
                    "sasl": {
                        "mechanism": "PLAIN",
                        "username": "u",
                        "usernameSecretRef": {"name": "p", "key": "user"},
                        "passwordSecretRef": {"name": "p", "key": "k"},
                    }
                }
            },
            "spec.kafka.sasl: set username or usernameSecretRef (one of them)",
        ),
        (
            {
                "kafka": {
                    "sasl": {
                        "mechanism": "GSSAPI",
                        "username": "u",
                        "passwordSecretRef": {"name": "p", "key": "k"},
                    }
                }
            },
            'spec.kafka.sasl.mechanism: Unsupported value: "GSSAPI"',
        ),
        ({"auth": {"header": "X API Key"}}, "spec.auth.header in body should match"),
        # A node either is dialled (endpoint) or dials in (listen), and a listener says who may connect.
        (
            {"endpoint": None},
            "spec: set exactly one of spec.endpoint (the bridge dials the node), spec.endpoints (a primary",
        ),
        ({"listen": {"anonymous": True}}, "spec: set exactly one of spec.endpoint"),
        (
            {"endpoint": None, "listen": {}},
            "spec.listen: set auth.tokenSecretRef (the token a node presents)",
        ),
        (
            {
                "endpoint": None,
                "listen": {"anonymous": True, "auth": {"tokenSecretRef": {"name": "t", "key": "k"}}},
            },
            "spec.listen: set auth.tokenSecretRef",
        ),
        (
            {"endpoint": None, "listen": {"anonymous": True, "port": 70000}},
            "spec.listen.port in body should be less",
        ),
        (
            {"endpoint": None, "listen": {"anonymous": True, "path": "x"}},
            "spec.listen.path in body should match",
        ),
        (
            {"endpoint": None, "listen": {"anonymous": True}, "replicas": 2},
            "spec.replicas: a listening node has one",
        ),
        (
            {"endpoint": None, "listen": {"anonymous": True}, "auth": {"header": "X-Key"}},
            "spec.auth and spec.tls are for dialling a node",
        ),
        (
            {"endpoint": None, "listen": {"anonymous": True, "service": {"type": "ExternalName"}}},
            'spec.listen.service.type: Unsupported value: "ExternalName"',
        ),
        (
            {
                "endpoint": None,
                "listen": {
                    "anonymous": True,
                    "ingress": {"host": "a.example.com"},
                    "httpRoute": {"host": "a.example.com", "parentRefs": [{"name": "gw"}]},
                },
            },
            "spec.listen: set ingress or httpRoute, not both",
        ),
        (
            {"endpoint": None, "listen": {"anonymous": True, "ingress": {"host": "https://a.example.com"}}},
            "spec.listen.ingress.host in body should match",
        ),
        (
            {"endpoint": None, "listen": {"anonymous": True, "httpRoute": {"host": "a.example.com"}}},
            "spec.listen.httpRoute.parentRefs: Required value",
        ),
        (
            {"endpoints": ["ws://a:1", "ws://b:2"]},  # and endpoint, from the base node
            "spec: set exactly one of spec.endpoint (the bridge dials the node), spec.endpoints",
        ),
        ({"endpoint": None, "endpoints": ["ws://a:1"]}, "spec.endpoints in body should have at least 2"),
        ({"endpoint": None, "endpoints": ["ws://a:1", "ws://a:1"]}, "spec.endpoints: list each URL once"),
        ({"endpoint": None, "endpoints": ["ws://a:1", "wss://b:2"]}, "spec.endpoints: use one scheme"),
        ({"endpoint": None, "endpoints": ["ws://a:1", "http://b:2"]}, "spec.endpoints[1]: Invalid value"),
        (
            {
                "endpoint": None,
                "endpoints": ["ws://a:1", "ws://b:2"],
                "tls": {"caSecretRef": {"name": "c", "key": "k"}},
            },
            "spec.tls needs a wss:// endpoint (every one of spec.endpoints)",
        ),
        ({"latencyObjectiveMs": 0}, "spec.latencyObjectiveMs in body should be greater than or equal to 1"),
        (
            {"template": {"spec": {"tolerations": [{"operator": "Maybe"}]}}},
            'spec.template.spec.tolerations[0].operator: Unsupported value: "Maybe"',
        ),
    ],
)
def test_invalid_nodes_are_rejected_naming_the_field(
    cluster: Cluster, namespace: str, spec: dict[str, Any], needle: str
) -> None:
    result = cluster.apply(node(namespace, **spec), check=False)
    assert result.returncode != 0
    assert needle in result.stderr, result.stderr


def _labels(labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"labels": labels}}


def _annotations(annotations: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"annotations": annotations}}


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        # Plain keys are what other Services, NetworkPolicies and PodMonitors select.
        (_labels({"app": "payments"}), "spec.template.metadata.labels: app has no prefix"),
        (
            _labels({"example.com/team": "relay", "app.kubernetes.io/instance": "other"}),
            "spec.template.metadata.labels: app.kubernetes.io/instance is reserved",
        ),
        (_labels({"resonance.io/node": "x"}), "spec.template.metadata.labels: resonance.io/node is reserved"),
        (_labels({"sidecar.istio.io/inject": "false"}), "labels: sidecar.istio.io/inject is reserved"),
        (
            _labels({"example.com/a b": "x"}),
            "spec.template.metadata.labels: example.com/a b is not a label key",
        ),
        (
            _labels({"example.com/team": "a b"}),
            "spec.template.metadata.labels.example.com/team in body should",
        ),
        (
            _annotations({"container.apparmor.security.beta.kubernetes.io/bridge": "unconfined"}),
            "annotations: container.apparmor.security.beta.kubernetes.io/bridge is reserved",
        ),
        (
            _annotations({"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}),
            "annotations: seccomp.security.alpha.kubernetes.io/pod is reserved",
        ),
        (
            _annotations({"sidecar.istio.io/inject": "false"}),
            "annotations: sidecar.istio.io/inject is reserved",
        ),
        (_annotations({"linkerd.io/inject": "disabled"}), "annotations: linkerd.io/inject is reserved"),
        (_annotations({"prometheus.io/scrape": "false"}), "annotations: prometheus.io/scrape is reserved"),
        (
            _annotations({"k8s.v1.cni.cncf.io/networks": "host"}),
            "annotations: k8s.v1.cni.cncf.io/networks is reserved",
        ),
        (
            _annotations({"iam.amazonaws.com/role": "admin"}),
            "annotations: iam.amazonaws.com/role is reserved",
        ),
        (_annotations({"example.com/big": "x" * 2049}), "spec.template.metadata.annotations.example.com/big"),
        (
            {"spec": {"nodeSelector": {"pool one": "edge"}}},
            "spec.template.spec.nodeSelector: pool one is not a label key",
        ),
        (
            {"spec": {"priorityClassName": "system-node-critical"}},
            "spec.template.spec.priorityClassName: the system-* classes are for the cluster's own",
        ),
        (
            {"spec": {"priorityClassName": "Low_Priority"}},
            "spec.template.spec.priorityClassName in body should",
        ),
        (
            {"spec": {"tolerations": [{"operator": "Equal", "value": "x"}]}},
            "spec.template.spec.tolerations[0]: Invalid value: a toleration without a key must say",
        ),
        (
            {"spec": {"tolerations": [{"key": "dedicated", "operator": "Exists", "value": "bridges"}]}},
            "operator: Exists takes no value",
        ),
        (
            {
                "spec": {
                    "tolerations": [{"key": "dedicated", "effect": "NoSchedule", "tolerationSeconds": 60}]
                }
            },
            "tolerationSeconds needs effect: NoExecute",
        ),
    ],
)
def test_a_template_may_not_set_reserved_or_malformed_keys(
    cluster: Cluster, namespace: str, template: dict[str, Any], needle: str
) -> None:
    """What the API server can refuse at once, naming the field and the key; the allow-lists (the
    operator's, chart values nodes.allowed*) are checked by the operator (podpolicy)."""
    result = cluster.apply(node(namespace, template=template), check=False)
    assert result.returncode != 0
    assert needle in result.stderr, result.stderr


def test_a_template_with_its_own_keys_is_accepted(cluster: Cluster, namespace: str) -> None:
    """The rules refuse the reserved, not everything: prefixed labels of one's own, annotations, node
    selectors on the well-known node labels, tolerations and other priority classes pass the API
    server (the operator then checks them against its allow-lists)."""
    template = {
        "metadata": {
            "labels": {"example.com/team": "relay", "team.example.com/cost-centre": ""},
            "annotations": {"example.com/owner": "ops", "owner": '{"json": true}'},
        },
        "spec": {
            "nodeSelector": {"kubernetes.io/arch": "arm64", "pool": "edge"},
            "tolerations": [
                {"operator": "Exists"},
                {"key": "dedicated", "value": "bridges", "effect": "NoExecute", "tolerationSeconds": 30},
            ],
            "priorityClassName": "bridges-low",
        },
    }
    assert cluster.apply(node(namespace, template=template), check=False).returncode == 0
    stored = (cluster.get("rn", "lexamoris", namespace) or {})["spec"]["template"]
    assert stored == template


def test_unknown_fields_are_rejected(cluster: Cluster, namespace: str) -> None:
    result = cluster.apply(node(namespace, endpont="ws://typo:1"), check=False)
    assert result.returncode != 0 and 'unknown field "spec.endpont"' in result.stderr, result.stderr


def test_anchor_is_immutable(cluster: Cluster, namespace: str) -> None:
    cluster.apply(node(namespace))
    result = cluster.apply(node(namespace, anchor="ELSEWHERE_1"), check=False)
    assert result.returncode != 0
    assert "spec.anchor is immutable" in result.stderr, result.stderr
    assert cluster.apply(node(namespace, frequencyHz=1.5)).returncode == 0  # other fields may change


def test_defaults_are_filled_in(cluster: Cluster, namespace: str) -> None:
    cluster.apply(node(namespace))
    spec = (cluster.get("rn", "lexamoris", namespace) or {})["spec"]
    assert (
        spec["inboundTopic"],
        spec["frequencyHz"],
        spec["sRoi"],
        spec["ackMode"],
        spec["maxInFlight"],
        spec["replicas"],
        spec["paused"],
        spec["startFrom"],
    ) == ("resonance.inbound", 0.043, 0.502, "ack", 1000, 1, False, "latest")
