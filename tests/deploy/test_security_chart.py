"""Least privilege, checked on what is rendered and built: every pod meets the restricted Pod Security
Standard (support/pss.py, written from the standard), the operator's own Kafka security is the bridges',
and the optional NetworkPolicies select the pods and ports they mean to."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest
import yaml
from resonance_operator import builders, mounts
from resonance_operator.model import CRD, KafkaSecurityRefs, Node
from resonance_operator.settings import Settings

from ..support import pss
from ..support.chart import ALL_ON, render
from ..support.kube import ROOT

SECURED_VALUES = {
    "kafka": {
        "tls": {
            "caSecretRef": {"name": "kafka-ca", "key": "ca.crt"},
            "clientCertSecretRef": {"name": "kafka-client"},
        },
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "usernameSecretRef": {"name": "kafka-user", "key": "username"},
            "passwordSecretRef": {"name": "kafka-user", "key": "password"},
        },
    },
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "bridgeEgressPorts": [{"port": 9093, "protocol": "TCP"}, {"port": 8766}],
    },
}
NODE_SECURITY = {
    "endpoint": "wss://lexamoris.example:8766",
    "tls": {"caSecretRef": {"name": "node-ca", "key": "ca.crt"}, "clientCertSecretRef": {"name": "client"}},
    "auth": {"tokenSecretRef": {"name": "token", "key": "token"}, "header": "X-API-Key"},
    "kafka": SECURED_VALUES["kafka"],
}


def _values(tmp_values: dict[str, Any], tmp_path: Any) -> list[str]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(tmp_values))
    return ["-f", str(path)]


def _bridge_template(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = yaml.safe_load((ROOT / "examples" / f"{name}-node.yaml").read_text())
    body["metadata"].update(namespace="resonance", uid="u", generation=1)
    body["spec"].update(copy.deepcopy(spec))
    template: dict[str, Any] = builders.deployment(Node.from_body(body), Settings())["spec"]["template"]
    return template


def _bridge_templates() -> list[dict[str, Any]]:
    nodes: list[tuple[str, dict[str, Any]]] = [("lexamoris", {}), ("nexus", {}), ("lexamoris", NODE_SECURITY)]
    return [_bridge_template(name, spec) for name, spec in nodes]


def _bridge_pods() -> list[dict[str, Any]]:
    return [t["spec"] for t in _bridge_templates()]


def test_every_pod_the_chart_or_the_operator_makes_is_restricted(tmp_path: Any) -> None:
    chart_pods = [
        (d["metadata"]["name"], d["spec"]["template"])
        for values in ([], [*ALL_ON, *_values(SECURED_VALUES, tmp_path)])
        for d in render(*values)
        if d["kind"] == "Deployment"
    ]
    assert len(chart_pods) >= 4  # the operator (twice), the dev Kafka, the demo nodes
    for doc in render(*_values(SECURED_VALUES, tmp_path)):
        kubernetes_validate.validate(doc, "1.37", strict=True)
    for name, pod in chart_pods:
        # The dev Kafka's image writes its configuration at start-up: the one writable root (a
        # demo broker, not installed by default); the restricted profile itself does not ask for it.
        annotations = pod["metadata"].get("annotations")
        assert pss.violations(pod["spec"], not name.endswith("-kafka"), annotations) == [], name
    for pod in _bridge_templates():
        assert pss.violations(pod["spec"], annotations=pod["metadata"]["annotations"]) == []
        assert pod["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda s: s.update(hostNetwork=True), "hostNetwork"),
        (lambda s: s["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (
            lambda s: s["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilege",
        ),
        (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(drop=[]), "drop ALL"),
        (
            lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
            "capabilities",
        ),
        (lambda s: s["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (lambda s: s["containers"][0]["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
        (lambda s: s.update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]), "hostPath"),
        (lambda s: s["containers"][0]["ports"][0].update(hostPort=80), "hostPort"),
        (
            lambda s: s["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False),
            "readOnlyRoot",
        ),
        (lambda s: s["securityContext"].update(seccompProfile={"type": "Unconfined"}), "Unconfined"),
        (
            lambda s: s["containers"][0]["securityContext"].update(seccompProfile={"type": "Unconfined"}),
            "bridge: seccompProfile must not be Unconfined",
        ),
        (
            lambda s: s["securityContext"].update(appArmorProfile={"type": "Unconfined"}),
            "pod: appArmorProfile",
        ),
        (
            lambda s: s["containers"][0]["securityContext"].update(appArmorProfile={"type": "Unconfined"}),
            "bridge: appArmorProfile",
        ),
    ],
)
def test_the_checker_catches_each_violation(change: Any, needle: str) -> None:
    spec = copy.deepcopy(_bridge_pods()[0])
    change(spec)
    assert any(needle in v for v in pss.violations(spec)), pss.violations(spec)


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("container.apparmor.security.beta.kubernetes.io/bridge", "AppArmor must be"),
        ("seccomp.security.alpha.kubernetes.io/pod", "seccomp must be"),
        ("container.seccomp.security.alpha.kubernetes.io/bridge", "seccomp must be"),
    ],
)
def test_the_checker_reads_the_security_annotations(key: str, needle: str) -> None:
    """The standard checks these annotations too: a pod whose spec is restricted is not, with them
    saying unconfined. A node's spec.template.metadata.annotations reaches its bridge pod as is."""
    for value in ("runtime/default", "localhost/bridge-profile"):
        pod = _bridge_template("lexamoris", {"template": {"metadata": {"annotations": {key: value}}}})
        assert pss.violations(pod["spec"], annotations=pod["metadata"]["annotations"]) == [], value
    pod = _bridge_template("lexamoris", {"template": {"metadata": {"annotations": {key: "unconfined"}}}})
    assert pss.violations(pod["spec"]) == []  # the spec alone is restricted
    found = pss.violations(pod["spec"], annotations=pod["metadata"]["annotations"])
    assert any(needle in v and key in v for v in found), found


def test_the_operator_consumes_with_the_bridges_kafka_security(tmp_path: Any) -> None:
    """The chart mounts the default Kafka's Secrets into the operator's pod exactly as the operator
    mounts them into a bridge: the same variables, files and volumes."""
    [operator] = [
        d
        for d in render(*_values(SECURED_VALUES, tmp_path))
        if d["metadata"]["name"].endswith("-operator") and d["kind"] == "Deployment"
    ]
    spec = operator["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    refs = KafkaSecurityRefs.model_validate_json(env["RESONANCE_BRIDGE_KAFKA_SECURITY"]["value"])
    assert refs == KafkaSecurityRefs.model_validate(SECURED_VALUES["kafka"])
    expected = mounts.Mounts()
    mounts.kafka(expected, refs)
    assert [e for e in container["env"] if e["name"].startswith("KAFKA_")] == expected.env
    assert container["volumeMounts"] == expected.mounts and spec["volumes"] == expected.volumes
    assert spec["securityContext"]["fsGroup"] == builders.BRIDGE_UID  # mode 0440 files stay readable
    # Nothing Kafka-secure without the values; tls: {} alone is TLS with the system's CAs.
    plain = next(d for d in render() if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert "volumes" not in plain and not any(
        e["name"].startswith("KAFKA_") for e in plain["containers"][0]["env"]
    )
    system = next(d for d in render("--set-json", "kafka.tls={}") if d["kind"] == "Deployment")
    system_env = {
        e["name"]: e.get("value") for e in system["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert system_env["KAFKA_SECURITY_PROTOCOL"] == "SSL"
    assert json.loads(system_env["RESONANCE_BRIDGE_KAFKA_SECURITY"]) == {"tls": {}}


def test_the_chart_values_take_the_crds_kafka_security() -> None:
    def names(schema: dict[str, Any]) -> Any:
        return {k: names(v) for k, v in (schema.get("properties") or {}).items()}

    crd = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["kafka"]
    values = json.loads((ROOT / "charts" / "resonance" / "values.schema.json").read_text())
    chart = values["properties"]["kafka"]["properties"]
    for field in ("tls", "sasl"):
        assert names(chart[field]) == names(crd["properties"][field]), field


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_network_policies_select_the_pods_and_ports_they_mean(tmp_path: Any) -> None:
    docs = render(*_values(SECURED_VALUES, tmp_path))
    policies = {
        d["metadata"]["name"].rsplit("-", 1)[1]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"
    }
    operator = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
    assert _selects(policies["operator"]["podSelector"]["matchLabels"], operator["metadata"]["labels"])
    port_names = {p["name"] for p in operator["spec"]["containers"][0]["ports"]}
    [rule] = policies["operator"]["ingress"]
    assert rule["from"] == SECURED_VALUES["networkPolicy"]["metricsFrom"]
    assert [p["port"] for p in rule["ports"]] == ["metrics"] and "metrics" in port_names
    bridge = _bridge_pods()[0]
    bridge_labels = builders.labels("lexamoris")
    assert _selects(policies["bridges"]["podSelector"]["matchLabels"], bridge_labels)
    assert not _selects(policies["bridges"]["podSelector"]["matchLabels"], operator["metadata"]["labels"])
    [rule] = policies["bridges"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["http"]
    assert "http" in {p["name"] for p in bridge["containers"][0]["ports"]}
    [egress] = policies["bridges"]["egress"]
    assert [p["port"] for p in egress["ports"]] == [53, 53, 9093, 8766]
    # Off by default; with no metricsFrom, nobody reaches the metrics ports; without egress ports,
    # bridge egress is not limited.
    assert not [d for d in render() if d["kind"] == "NetworkPolicy"]
    bare = [d["spec"] for d in render("--set", "networkPolicy.enabled=true") if d["kind"] == "NetworkPolicy"]
    assert all(p["ingress"] == [] and p["policyTypes"] == ["Ingress"] for p in bare)
