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
        (
            {"template": {"metadata": {"labels": {"app.kubernetes.io/instance": "other"}}}},
            "spec.template.metadata.labels must not set app.kubernetes.io/name or app.kubernetes.io/instance",
        ),
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
