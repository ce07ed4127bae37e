"""The operator against a real API server: one Deployment per node, drift repaired, status that follows."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from resonance_local.embedded import EmbeddedBroker
from resonance_operator import builders
from resonance_operator.model import Node
from resonance_operator.settings import load

from ..support.harness import written
from ..support.kube import Cluster, Operator, condition, heartbeat, node, uid_of
from ..support.poll import until


async def deployment_of(cluster: Cluster, namespace: str, name: str, timeout: float = 30) -> dict[str, Any]:
    return await until(
        lambda: cluster.get("deployment", builders.deployment_name(name), namespace),
        timeout,
        f"Deployment of {namespace}/{name}",
    )


async def wait_for_replicas(cluster: Cluster, namespace: str, replicas: int, what: str) -> None:
    def spec_replicas() -> bool:
        deployment = cluster.get("deployment", "resonance-bridge-lexamoris", namespace) or {}
        return bool(deployment.get("spec", {}).get("replicas") == replicas)

    await until(spec_replicas, 30, what)


async def test_each_example_gets_exactly_one_deployment(
    cluster: Cluster, operator: Operator, namespace: str, examples: Path
) -> None:
    for path in sorted(examples.glob("*-node.yaml")):
        manifest = yaml.safe_load(path.read_text())
        manifest["metadata"]["namespace"] = namespace
        cluster.apply(manifest)
        name = manifest["metadata"]["name"]
        deployment = await deployment_of(cluster, namespace, name)
        body = cluster.get("rn", name, namespace)
        assert body is not None
        expected = builders.deployment(Node.from_body(body), load(operator.env))  # the operator's settings
        assert builders.is_subset(expected, deployment), json.dumps(deployment, indent=1)
        meta = deployment["metadata"]
        assert meta["labels"] == {
            "app.kubernetes.io/name": "resonance-bridge",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": "resonance-operator",
            "app.kubernetes.io/part-of": "resonance",
        }
        owner = meta["ownerReferences"]
        assert [(o["kind"], o["name"], o["uid"], o["controller"]) for o in owner] == [
            ("ResonanceNode", name, body["metadata"]["uid"], True)
        ]
        pod = deployment["spec"]["template"]
        bridge = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in bridge["env"]}
        if "listen" in manifest["spec"]:  # the node dials in: the bridge listens, behind a Service
            assert env["RESONANCE_LISTEN"] == f"0.0.0.0:{manifest['spec']['listen']['port']}"
            assert cluster.get("service", f"resonance-bridge-{name}", namespace) is not None
        else:
            assert env["RESONANCE_ENDPOINT"] == manifest["spec"]["endpoint"]
        assert env["RESONANCE_TOPIC"] == manifest["spec"]["topic"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == operator.env["RESONANCE_KAFKA_BOOTSTRAP_SERVERS"]
        assert env["KAFKA_GROUP_ID"] == f"resonance-bridge.{namespace}.{name}"
        assert bridge["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert bridge["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert bridge["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert len(pod["metadata"]["annotations"][builders.HASH_ANNOTATION]) == 16
    names = sorted(d["metadata"]["name"] for d in cluster.items("deployments", namespace))
    assert names == [
        "resonance-bridge-lexamoris",
        "resonance-bridge-nexus",
        "resonance-bridge-resonance-server",
    ]
    status = await until(
        lambda: (cluster.get("rn", "nexus", namespace) or {}).get("status"), 30, "nexus status"
    )
    assert status["deployment"] == "resonance-bridge-nexus"
    assert condition({"status": status}, "Ready") is not None


async def test_kubectl_get_prints_the_columns(cluster: Cluster, operator: Operator, namespace: str) -> None:
    cluster.apply(node(namespace))
    await until(
        lambda: condition(cluster.get("rn", "lexamoris", namespace), "Ready"), 30, "a Ready condition"
    )
    table = cluster.kubectl("get", "resonancenodes", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "ENDPOINT", "LISTEN", "TOPIC", "ANCHOR", "READY", "HEARTBEAT", "AGE"]
    assert table[1].split()[:5] == [
        "lexamoris",
        "ws://lexamoris-server:8766",
        "resonance.lexamoris",
        "BOLZANO_71",
        "False",
    ]
    wide = cluster.kubectl("get", "rn", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == [
        "NAME", "ENDPOINT", "IN", "USE", "LISTEN", "CLIENT", "TOPIC", "ANCHOR", "READY", "HEARTBEAT",
        "INBOUND", "REPLICAS", "RELAYED", "LATENCY", "AGE",
    ]  # fmt: skip
    assert wide[1].split()[5:7] == ["resonance.inbound", "1"]  # no heartbeat yet: an empty column


async def test_spec_change_rolls_and_metadata_change_does_not(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    cluster.apply(node(namespace))
    first = await deployment_of(cluster, namespace, "lexamoris")
    old_hash = first["spec"]["template"]["metadata"]["annotations"][builders.HASH_ANNOTATION]
    cluster.apply(node(namespace, frequencyHz=2))

    def rolled() -> dict[str, Any] | None:
        d = cluster.get("deployment", "resonance-bridge-lexamoris", namespace)
        new = d and d["spec"]["template"]["metadata"]["annotations"][builders.HASH_ANNOTATION]
        return d if new and new != old_hash else None

    second = await until(rolled, 30, "a new config hash")
    env = {e["name"]: e.get("value") for e in second["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RESONANCE_FREQUENCY_HZ"] == "2"
    cluster.kubectl("label", "rn", "lexamoris", "-n", namespace, "team=resonance")
    cluster.kubectl("annotate", "rn", "lexamoris", "-n", namespace, "note=hello")
    await until(
        lambda: "team" in ((cluster.get("rn", "lexamoris", namespace) or {})["metadata"].get("labels") or {})
    )
    await asyncio.sleep(2)  # give a wrongly triggered update the time to happen
    third = cluster.get("deployment", "resonance-bridge-lexamoris", namespace)
    assert third is not None and third["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]


def _set_ready(cluster: Cluster, namespace: str, ready: int) -> None:
    deployment = cluster.get("deployment", "resonance-bridge-lexamoris", namespace)
    assert deployment is not None
    generation = deployment["metadata"].get("generation", 1)
    status = {
        "observedGeneration": generation,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }
    cluster.patch("deployment", "resonance-bridge-lexamoris", namespace, {"status": status}, "status")


async def test_ready_follows_the_deployment_and_the_heartbeats(
    cluster: Cluster, operator: Operator, namespace: str, broker: EmbeddedBroker
) -> None:
    cluster.needs_fake_status()
    cluster.apply(node(namespace))
    await deployment_of(cluster, namespace, "lexamoris")
    _set_ready(cluster, namespace, 1)

    def ready_is(value: str) -> dict[str, Any] | None:
        body = cluster.get("rn", "lexamoris", namespace)
        cond = condition(body, "Ready")
        return body if cond and cond["status"] == value else None

    # A ready Deployment is not enough. Waited for, not read once: the status written at creation
    # (BridgeNotReady) may still be there a moment after the Deployment's status was set.
    await until(
        lambda: (condition(ready_is("False"), "Ready") or {}).get("reason") == "NoHeartbeatYet",
        30,
        "Ready=False, NoHeartbeatYet",
    )
    async with written((broker, heartbeat(namespace, "lexamoris", uid_of(cluster, namespace)))):
        body = await until(lambda: ready_is("True"), 30, "Ready=True")
    assert body["status"]["lastHeartbeatTime"].startswith("20") and body["status"]["bridge"]["kafkaConnected"]
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert condition(body, "Ready")["observedGeneration"] == body["metadata"]["generation"]  # type: ignore[index]
    assert body["status"]["readyReplicas"] == 1
    assert condition(body, "Progressing")["reason"] == "RolledOut"  # type: ignore[index]
    _set_ready(cluster, namespace, 0)
    body = await until(lambda: ready_is("False"), 30, "Ready=False")
    assert condition(body, "Ready")["reason"] == "BridgeNotReady"  # type: ignore[index]


async def test_deleted_deployment_is_recreated_and_paused_scales_to_zero(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    cluster.apply(node(namespace))
    first = await deployment_of(cluster, namespace, "lexamoris")
    cluster.kubectl("delete", "deployment", "resonance-bridge-lexamoris", "-n", namespace)

    def recreated() -> dict[str, Any] | None:
        d = cluster.get("deployment", "resonance-bridge-lexamoris", namespace)
        return d if d and d["metadata"]["uid"] != first["metadata"]["uid"] else None

    await until(recreated, 30, "the Deployment to be recreated")
    cluster.patch("deployment", "resonance-bridge-lexamoris", namespace, {"spec": {"replicas": 5}})
    await wait_for_replicas(cluster, namespace, 1, "the hand edit to be reverted")
    cluster.apply(node(namespace, paused=True))
    await wait_for_replicas(cluster, namespace, 0, "replicas 0")
    paused = await until(
        lambda: (
            (c := condition(cluster.get("rn", "lexamoris", namespace), "Ready"))
            and c["reason"] == "Paused"
            and c
        ),
        30,
        "a Paused condition",
    )
    assert "paused" in paused["message"] and paused["status"] == "False"


async def test_operator_restart_adopts_what_exists(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    cluster.apply(node(namespace))
    before = await deployment_of(cluster, namespace, "lexamoris")
    await until(lambda: condition(cluster.get("rn", "lexamoris", namespace), "Ready"), 30, "status")
    await asyncio.sleep(1)
    before = cluster.get("deployment", "resonance-bridge-lexamoris", namespace) or before
    operator.stop()  # as a rollout restarts it (a SIGKILLed leader: tests/operator/test_failover.py)
    seen = len(operator.output())
    operator.start()
    await until(
        lambda: "Deployment resonance-bridge-lexamoris is up to date" in operator.output()[seen:],
        60,
        "the restarted operator to resume the node",
    )
    await asyncio.sleep(1)
    after = cluster.items("deployments", namespace)
    assert len(after) == 1
    assert after[0]["metadata"]["uid"] == before["metadata"]["uid"]
    assert after[0]["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_fifty_nodes_at_once(cluster: Cluster, operator: Operator, namespace: str) -> None:
    nodes = [node(namespace, name=f"node-{i:02d}", topic=f"resonance.node-{i:02d}") for i in range(50)]
    cluster.apply(yaml.safe_dump_all(nodes))
    await until(lambda: len(cluster.items("deployments", namespace)) == 50, 120, "50 Deployments")
    owners = sorted(
        d["metadata"]["ownerReferences"][0]["name"] for d in cluster.items("deployments", namespace)
    )
    assert owners == [f"node-{i:02d}" for i in range(50)]
    await until(
        lambda: all(condition(n, "Ready") for n in cluster.items("rn", namespace)), 120, "50 statuses"
    )


async def test_scale_subresource_scales_the_bridge(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    cluster.needs_fake_status()
    cluster.apply(node(namespace))
    await deployment_of(cluster, namespace, "lexamoris")
    # What `kubectl scale rn lexamoris --replicas=2` does (kube-lite refuses kubectl scale's protobuf).
    cluster.patch("rn", "lexamoris", namespace, {"spec": {"replicas": 2}}, "scale")
    await wait_for_replicas(cluster, namespace, 2, "the Deployment scaled to 2")
    scale = json.loads(
        cluster.kubectl(
            "get",
            "--raw",
            f"/apis/resonance.io/v1alpha1/namespaces/{namespace}/resonancenodes/lexamoris/scale",
        ).stdout
    )
    assert scale["spec"]["replicas"] == 2
    # One pod so far (the Deployment says so): the scale status is what exists, for HPA and kubectl.
    _set_ready(cluster, namespace, 1)

    def scale_status() -> dict[str, Any]:
        url = f"/apis/resonance.io/v1alpha1/namespaces/{namespace}/resonancenodes/lexamoris/scale"
        return dict(json.loads(cluster.kubectl("get", "--raw", url).stdout)["status"])

    expected = {"replicas": 1, "selector": builders.selector("lexamoris")}
    await until(
        lambda: scale_status() == expected, 30, lambda: f"scale status {expected}, not {scale_status()}"
    )


async def test_operator_liveness_endpoint(operator: Operator) -> None:
    url = f"http://127.0.0.1:{operator.env['RESONANCE_OPERATOR_LIVENESS_PORT']}/healthz"

    def alive() -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: dict[str, Any] = json.loads(response.read())
                return body if response.status == 200 else None
        except OSError:
            return None

    body = await until(alive, 60, "the operator's /healthz")
    assert "kubernetes" in body  # the probe reached the API server (a failing probe makes /healthz 500)


async def test_a_spec_larger_than_the_annotations_limit_is_handled_and_recorded(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    """kopf records the spec it handled in an annotation, and annotations hold 256 KiB in all: a spec
    past that was handled again and again, its record refused. The record is the status'
    observedGeneration now, written by the status patch that follows a reconcile anyway: no request,
    and no annotation, records it."""
    values = [f"{'v' * 60}{i:05d}" for i in range(5000)]  # a ~350 KB spec, as a template may hold
    selector = {"matchExpressions": [{"key": "app", "operator": "In", "values": values}]}
    term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": selector}
    affinity = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "podAffinityTerm": term}
    ]}}  # fmt: skip
    big = node(namespace, template={"spec": {"affinity": affinity}})
    assert len(json.dumps(big["spec"])) > 300_000
    before = len(operator.output())
    cluster.kubectl("create", "-f", "-", stdin=json.dumps(big))  # apply would record it in an annotation too
    first = await deployment_of(cluster, namespace, "lexamoris")
    assert first["spec"]["template"]["spec"]["affinity"] == affinity

    def recorded() -> dict[str, Any] | None:
        body = cluster.get("rn", "lexamoris", namespace) or {}
        handled = (body.get("status") or {}).get("observedGeneration")
        return body if handled == body["metadata"]["generation"] else None

    await until(recorded, 30, "the status' record of the handled spec")
    await asyncio.sleep(2)  # kopf's record, were it still written, follows the handler
    annotations = (cluster.get("rn", "lexamoris", namespace) or {})["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith("resonance.io/")], annotations
    lines = operator.output()[before:].splitlines()
    handled = [line for line in lines if "Deployment resonance-bridge" in line]
    assert len(handled) == 1, handled  # once: not again for its own status patch
    cluster.patch("rn", "lexamoris", namespace, {"spec": {"frequencyHz": 2}})  # a change is still seen

    def updated() -> bool:
        d = cluster.get("deployment", "resonance-bridge-lexamoris", namespace) or {}
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        return bool(env["RESONANCE_FREQUENCY_HZ"] == "2")

    await until(updated, 30, "the Deployment updated")
    assert "Too long" not in operator.output()
