"""A listening node (spec.listen) against a real API server: its Service, its status while it waits
for its node and once the node dialled in, and the Service gone once the node dials out again."""

from __future__ import annotations

from typing import Any

from resonance_local.embedded import EmbeddedBroker

from ..support.harness import written
from ..support.kube import Cluster, Operator, condition, heartbeat, node, uid_of
from ..support.poll import until
from .test_operator import _set_ready, deployment_of

BRIDGE = "resonance-bridge-lexamoris"
LISTEN = {
    "port": 9000,
    "path": "/resonance",
    "anonymous": True,
    "service": {"annotations": {"example.com/x": "y"}},
}


async def test_a_listening_node_gets_a_service_a_waiting_state_and_loses_the_service_when_it_dials(
    cluster: Cluster, operator: Operator, namespace: str, broker: EmbeddedBroker
) -> None:
    cluster.needs_fake_status()
    cluster.apply(node(namespace, endpoint=None, listen=LISTEN))
    deployment = await deployment_of(cluster, namespace, "lexamoris")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RESONANCE_LISTEN"] == "0.0.0.0:9000" and env["RESONANCE_LISTEN_PATH"] == "/resonance"
    assert "RESONANCE_ENDPOINT" not in env
    assert {"name": "websocket", "containerPort": 9000, "protocol": "TCP"} in container["ports"]
    service = await until(lambda: cluster.get("service", BRIDGE, namespace), 30, "the node's Service")
    assert service["spec"]["ports"][0]["port"] == 9000 and service["spec"]["type"] == "ClusterIP"
    assert service["metadata"]["annotations"]["example.com/x"] == "y"
    assert service["metadata"]["ownerReferences"][0]["uid"] == uid_of(cluster, namespace)
    columns = cluster.kubectl("get", "rn", "lexamoris", "-n", namespace).stdout.splitlines()
    assert "LISTEN" in columns[0] and "9000" in columns[1], columns

    # No node dialled in yet: a state of its own, not an error; then a node, named in the status.
    _set_ready(cluster, namespace, 1)
    uid = uid_of(cluster, namespace)

    def ready(reason: str) -> dict[str, Any] | None:
        body = cluster.get("rn", "lexamoris", namespace)
        return body if (condition(body, "Ready") or {}).get("reason") == reason else None

    waiting = heartbeat(namespace, "lexamoris", uid, websocket=False, mode="listen")
    async with written((broker, waiting)):
        body = await until(lambda: ready("WaitingForNode"), 30, "Ready=False, WaitingForNode")
    assert "port 9000, path /resonance" in (condition(body, "WebSocketConnected") or {})["message"]
    assert body["status"]["bridge"]["mode"] == "listen"
    came = heartbeat(
        namespace,
        "lexamoris",
        uid,
        mode="listen",
        client="10.1.2.3:40000",
        connected_since="2026-12-07T10:00:00Z",
    )
    async with written((broker, came)):
        body = await until(lambda: ready("BridgeReady"), 30, "Ready=True")
    assert body["status"]["bridge"]["client"] == "10.1.2.3:40000"
    assert "10.1.2.3:40000" in (condition(body, "WebSocketConnected") or {})["message"]
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert '"reason": "NotReady"' not in events  # waiting for a node was never a Warning

    # The node dials out again: its Service goes, its port too.
    cluster.patch(
        "rn", "lexamoris", namespace, {"spec": {"listen": None, "endpoint": "ws://lexamoris-server:8766"}}
    )
    await until(lambda: cluster.get("service", BRIDGE, namespace) is None, 30, "the Service deleted")

    def dialling() -> bool:
        d = cluster.get("deployment", BRIDGE, namespace) or {}
        return [p["name"] for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]] == ["http"]

    await until(dialling, 30, "the Deployment without the websocket port")


async def test_a_listening_nodes_ingress_becomes_an_httproute_a_host_not_allowed_is_refused_and_both_go(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    host = f"lexamoris.{namespace}.nodes.example.com"  # the operator allows *.{namespace}.nodes...
    ingress = {"host": host, "className": "nginx", "tlsSecretName": "nodes-tls"}
    cluster.apply(node(namespace, endpoint=None, listen={**LISTEN, "ingress": ingress}))
    made = await until(lambda: cluster.get("ingress", BRIDGE, namespace), 30, "the node's Ingress")
    assert made["spec"]["rules"][0]["host"] == host and made["spec"]["ingressClassName"] == "nginx"
    backend = made["spec"]["rules"][0]["http"]["paths"][0]
    assert backend["path"] == "/resonance" and backend["backend"]["service"]["name"] == BRIDGE
    assert made["metadata"]["annotations"] == {"example.com/read-timeout": "3600"}  # the administrator's
    assert made["metadata"]["ownerReferences"][0]["uid"] == uid_of(cluster, namespace)

    # An HTTPRoute instead: the Ingress goes.
    route = {"host": host, "parentRefs": [{"name": "edge", "namespace": "gateways"}]}
    cluster.patch("rn", "lexamoris", namespace, {"spec": {"listen": {"ingress": None, "httpRoute": route}}})
    made = await until(lambda: cluster.get("httproute", BRIDGE, namespace), 30, "the node's HTTPRoute")
    assert made["spec"]["hostnames"] == [host] and made["spec"]["parentRefs"] == route["parentRefs"]
    assert made["spec"]["rules"][0]["backendRefs"] == [{"name": BRIDGE, "port": 9000}]
    await until(lambda: cluster.get("ingress", BRIDGE, namespace) is None, 30, "the Ingress deleted")

    # Another team's host: refused, naming the field; what exists stays as it was.
    taken = "lexamoris.team-b.nodes.example.com"
    cluster.patch("rn", "lexamoris", namespace, {"spec": {"listen": {"httpRoute": {"host": taken}}}})

    def refused() -> dict[str, Any] | None:
        ready = condition(cluster.get("rn", "lexamoris", namespace), "Ready") or {}
        return ready if ready.get("reason") == "NotAllowed" else None

    ready = await until(refused, 30, "Ready=False, NotAllowed")
    assert ready["message"].startswith(f"spec.listen.httpRoute.host: {taken} is not in"), ready
    assert (cluster.get("httproute", BRIDGE, namespace) or {})["spec"]["hostnames"] == [host]

    # Dialling out again: the HTTPRoute and the Service go.
    cluster.patch(
        "rn", "lexamoris", namespace, {"spec": {"listen": None, "endpoint": "ws://lexamoris-server:8766"}}
    )
    await until(lambda: cluster.get("httproute", BRIDGE, namespace) is None, 30, "the HTTPRoute deleted")
    assert cluster.get("service", BRIDGE, namespace) is None
