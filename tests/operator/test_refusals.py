"""What the operator refuses to do for a node's author, against a real API server and the operator's
process: take over a workload it did not create, or send a node's credentials to an endpoint or a
Kafka outside the administrator's allow-lists. Each refusal says why on the node (Ready, an Event)
and writes nothing."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from resonance_local.embedded import EmbeddedBroker
from resonance_operator import builders, policy
from resonance_operator.model import Node
from resonance_operator.settings import Settings

from ..support.kube import Cluster, Operator, condition, node
from ..support.poll import until

BRIDGE = builders.deployment_name("lexamoris")


@pytest.mark.parametrize(
    ("host", "port", "pattern", "allowed"),
    [
        ("a.nodes.example.com", 443, "*.nodes.example.com", True),
        ("A.Nodes.Example.COM", 443, "*.nodes.example.com", True),  # DNS ignores case
        ("nodes.example.com", 443, "*.nodes.example.com", False),
        ("a.nodes.example.com.evil.net", 443, "*.nodes.example.com", False),
        ("lexamoris-server", 8766, "lexamoris-server:8766", True),
        ("lexamoris-server", 8767, "lexamoris-server:8766", False),
        ("lexamoris-server", 8767, "lexamoris-server:876?", True),
        ("lexamoris-server", None, "lexamoris-server:8766", False),
        ("::1", 8766, "[::1]:8766", True),
        ("::1", 8766, "::1", True),
        ("::2", 8766, "::1", False),
    ],
)
def test_allow_list_patterns(host: str, port: int | None, pattern: str, allowed: bool) -> None:
    assert policy.matches(host, port, (pattern,)) is allowed


def test_an_empty_allow_list_allows_any_and_the_default_kafka_is_always_allowed() -> None:
    assert policy.endpoint("wss://anything.example:1", ()) is None
    assert policy.bootstrap("kafka:9092", "kafka:9092", ("other:1",)) is None
    assert policy.bootstrap(None, "kafka:9092", ("other:1",)) is None
    refused = policy.bootstrap("kafka:9092,x:1", "", ("kafka:*",))
    assert refused is not None and refused.startswith("spec.kafka.bootstrapServers: x:1 not in")


def test_every_endpoint_of_a_node_with_standbys_must_be_allowed_each_named() -> None:
    body = {
        "metadata": {"name": "a", "namespace": "team-a", "uid": "u", "generation": 1},
        "spec": {"topic": "t", "anchor": "A", "endpoints": ["ws://a.nodes.example.com", "ws://evil.example"]},
    }
    settings = Settings(allowed_endpoints=("*.nodes.example.com",))
    assert [p.split(":")[0] for p in policy.problems(Node.from_body(body), settings)] == ["spec.endpoints[1]"]


def test_an_ingress_host_must_be_allowed_and_an_empty_list_allows_none() -> None:
    def host(where: str, allowed: tuple[str, ...]) -> str | None:
        exposure = {"host": "a.team-a.nodes.example.com", "parentRefs": [{"name": "gw"}]}
        body = {
            "metadata": {"name": "a", "namespace": "team-a", "uid": "u", "generation": 1},
            "spec": {"topic": "t", "anchor": "A", "listen": {"anonymous": True, where: exposure}},
        }
        return policy.exposed_host(Node.from_body(body), allowed)

    for where in ("ingress", "httpRoute"):
        assert host(where, ("*.{namespace}.nodes.example.com",)) is None
        refused = host(where, ("*.team-b.nodes.example.com",))
        assert refused is not None and refused.startswith(f"spec.listen.{where}.host: a.team-a.nodes")
        assert "(*.team-b.nodes.example.com)" in refused and "nodes.allowedIngressHosts" in refused
        assert "allowed hosts (none)" in (host(where, ()) or "")


def events(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str, str]]:
    return [
        (e["type"], e["reason"], e["message"])
        for e in cluster.items("events", namespace)
        if e["involvedObject"]["name"] == name
    ]


def ready(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return condition(cluster.get("rn", name, namespace), "Ready") or {}


def refused(cluster: Cluster, namespace: str, name: str) -> bool:
    return ready(cluster, namespace, name).get("reason") == "NotAllowed"


def foreign_deployment(namespace: str, **meta: Any) -> dict[str, Any]:
    """Someone else's workload that happens to have the name a node's bridge would get."""
    labels = {"app": "payments"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": BRIDGE, "namespace": namespace, **meta},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "payments", "image": "payments:1"}]},
            },
        },
    }


@pytest.mark.parametrize("forged", [False, True], ids=["unowned", "forged-owner"])
async def test_a_deployment_the_operator_did_not_create_is_left_alone(
    cluster: Cluster, operator: Operator, namespace: str, forged: bool
) -> None:
    """Unowned, or labelled as the operator's with an owner reference to a node of that name but
    another uid (which the operator's Deployment watch sees): Conflict, named, and untouched."""
    meta: dict[str, Any] = {}
    if forged:
        meta["labels"] = builders.labels("lexamoris")
        meta["ownerReferences"] = [
            {"apiVersion": "resonance.io/v1alpha1", "kind": "ResonanceNode", "name": "lexamoris",
             "uid": str(uuid.uuid4()), "controller": True},
        ]  # fmt: skip
    cluster.apply(foreign_deployment(namespace, **meta))
    before = cluster.get("deployment", BRIDGE, namespace)
    assert before is not None
    cluster.apply(node(namespace))
    await until(lambda: ready(cluster, namespace, "lexamoris").get("reason") == "Conflict", 30, "Conflict")
    message = ready(cluster, namespace, "lexamoris")["message"]
    assert f"Deployment {namespace}/{BRIDGE} exists and is not this node's" in message, message
    await until(
        lambda: any(e[:2] == ("Warning", "Conflict") for e in events(cluster, namespace, "lexamoris")),
        10,
        "a Warning Event",
    )
    after = cluster.get("deployment", BRIDGE, namespace)
    assert after is not None
    assert after["spec"] == before["spec"] and after["metadata"].get("labels") == before["metadata"].get(
        "labels"
    )
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "it was written"
    managers = {m.get("manager") for m in after["metadata"].get("managedFields") or ()}
    assert "resonance-operator" not in managers, managers


async def test_a_service_account_the_operator_did_not_create_is_left_alone(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": BRIDGE, "namespace": namespace},
    }
    cluster.apply(account)
    cluster.apply(node(namespace))
    await until(lambda: ready(cluster, namespace, "lexamoris").get("reason") == "Conflict", 30, "Conflict")
    assert f"ServiceAccount {namespace}/{BRIDGE}" in ready(cluster, namespace, "lexamoris")["message"]
    assert cluster.get("deployment", BRIDGE, namespace) is None, "a bridge ran as someone else's account"
    # Not carried out, so retried: kopf tells that from observedGeneration (diffbase.py).
    assert not (cluster.get("rn", "lexamoris", namespace) or {})["status"].get("observedGeneration")
    if os.environ.get("RESONANCE_SOAK") == "long":  # make soak: the retry comes 30 s later
        cluster.kubectl("delete", "serviceaccount", BRIDGE, "-n", namespace)
        await until(lambda: cluster.get("deployment", BRIDGE, namespace), 60, "the retried reconcile")

        def handled() -> bool:
            body = cluster.get("rn", "lexamoris", namespace) or {}
            return bool(body["status"].get("observedGeneration") == 1)

        await until(handled, 10, "observedGeneration carried out")


@pytest.fixture
def guarded(cluster: Cluster, broker: EmbeddedBroker, tmp_path: Path) -> Iterator[tuple[str, Operator]]:
    """An operator of the test's own with allow-lists, on a namespace of its own (the session's
    operator watches t-*): its namespace, and it."""
    namespace = cluster.namespace(f"p-{uuid.uuid4().hex[:8]}")
    process = Operator(cluster.kubeconfig, tmp_path / "operator.log", broker.bootstrap)
    process.env.update(
        RESONANCE_WATCH_NAMESPACES=namespace,
        RESONANCE_ALLOWED_ENDPOINTS="*.nodes.example.com, lexamoris-server:8766",
        RESONANCE_ALLOWED_BOOTSTRAP_SERVERS="kafka-*.kafka.svc:9093",
        RESONANCE_ALLOWED_PRIORITY_CLASSES="bridges-low",
    )
    process.start()
    try:
        yield namespace, process
    finally:
        process.kill()


def endpoint_of(cluster: Cluster, namespace: str, name: str) -> str | None:
    deployment = cluster.get("deployment", builders.deployment_name(name), namespace) or {}
    for container in deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
        for env in container["env"]:
            if env["name"] == "RESONANCE_ENDPOINT":
                return str(env["value"])
    return None


async def test_nodes_outside_the_allow_lists_are_refused(
    cluster: Cluster, guarded: tuple[str, Operator]
) -> None:
    namespace, operator = guarded
    secret = {"tokenSecretRef": {"name": "node-token", "key": "token"}}
    cluster.apply(node(namespace, "inside", endpoint="wss://a.nodes.example.com", auth=secret))
    cluster.apply(node(namespace, "port", endpoint="ws://lexamoris-server:8766"))
    cluster.apply(node(namespace, "outside", endpoint="wss://attacker.example.net:443", auth=secret))
    cluster.apply(  # the userinfo is not the host
        node(namespace, "userinfo", endpoint="wss://a.nodes.example.com@attacker.example.net/", auth=secret)
    )
    cluster.apply(node(namespace, "otherport", endpoint="ws://lexamoris-server:9999"))
    cluster.apply(node(namespace, "kafka", kafka={"bootstrapServers": "kafka-0.kafka.svc:9093,evil:9092"}))
    low, high = ({"spec": {"priorityClassName": name}} for name in ("bridges-low", "payments-high"))
    cluster.apply(node(namespace, "low", endpoint="ws://lexamoris-server:8766", template=low))
    cluster.apply(node(namespace, "high", endpoint="ws://lexamoris-server:8766", template=high))
    for name in ("inside", "port", "low"):
        await until(partial(endpoint_of, cluster, namespace, name), 30, f"{name}'s Deployment")
    for name, field in [
        ("outside", "spec.endpoint: host attacker.example.net:443"),
        ("userinfo", "spec.endpoint: host attacker.example.net:443"),
        ("otherport", "spec.endpoint: host lexamoris-server:9999"),
        ("kafka", "spec.kafka.bootstrapServers: evil:9092 not in"),
        ("high", "spec.template.spec.priorityClassName: payments-high is not allowed"),
    ]:
        await until(partial(refused, cluster, namespace, name), 30, f"{name} refused")
        message = ready(cluster, namespace, name)["message"]
        assert field in message and "nodes.allowed" in message, message
        assert any(e[:2] == ("Warning", "NotAllowed") for e in events(cluster, namespace, name))
        assert cluster.get("deployment", builders.deployment_name(name), namespace) is None
        assert cluster.get("serviceaccount", builders.deployment_name(name), namespace) is None

    # No heartbeat consumer dials the refused node's Kafka: the default one only.
    assert operator.metric("resonance_operator_heartbeat_consumers") == 1

    # An allowed node edited to point elsewhere: refused, and its Deployment keeps the old endpoint.
    cluster.apply(node(namespace, "inside", endpoint="wss://attacker.example.net", auth=secret))
    await until(lambda: ready(cluster, namespace, "inside").get("reason") == "NotAllowed", 30, "refused")
    assert endpoint_of(cluster, namespace, "inside") == "wss://a.nodes.example.com"
    # Back inside the allow-list: acted on again.
    cluster.apply(node(namespace, "inside", endpoint="wss://b.nodes.example.com", auth=secret))
    await until(
        lambda: endpoint_of(cluster, namespace, "inside") == "wss://b.nodes.example.com", 30, "updated"
    )
    await until(lambda: ready(cluster, namespace, "inside").get("reason") != "NotAllowed", 30, "cleared")
