"""A secured node end to end: the operator's Deployment mounts the node's Secrets, the bridge (run by the
kubelet harness, which writes Secret volumes as files and follows their updates) reaches a wss:// node
with a private CA, a client certificate and a token, a rotated token takes effect without a restart,
and no secret value ever reaches a log, a status, an Event or a Deployment."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer

from ..support.kube import Cluster, Operator, condition, node
from ..support.kubelet import running as kubelet
from ..support.pki import Authority
from ..support.poll import until

BRIDGE = "resonance-bridge-lexamoris"


def secret(namespace: str, name: str, type_: str = "Opaque", **data: str | bytes) -> dict[str, object]:
    encoded = {
        k.replace("_", "."): base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode()
        for k, v in data.items()
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": type_,
        "data": encoded,
    }


def websocket(cluster: Cluster, namespace: str) -> dict[str, str]:
    return condition(cluster.get("rn", "lexamoris", namespace), "WebSocketConnected") or {}


@pytest.fixture(params=["INFO", "DEBUG"])
def watching(
    request: pytest.FixtureRequest, cluster: Cluster, broker: EmbeddedBroker, tmp_path: Path
) -> Iterator[tuple[Operator, str, str]]:
    """(operator, its namespace, log level): at INFO the session's operator; at DEBUG one of the test's
    own, so that kopf's own DEBUG output (bodies, patches) is searched too, on a namespace only it
    watches (not t-*)."""
    if request.param == "INFO":
        yield request.getfixturevalue("operator"), request.getfixturevalue("namespace"), "INFO"
        return
    namespace = cluster.namespace(f"d-{uuid.uuid4().hex[:8]}")
    process = Operator(cluster.kubeconfig, tmp_path / "operator.log", broker.bootstrap)
    process.env.update(RESONANCE_WATCH_NAMESPACES=namespace, RESONANCE_LOG_LEVEL="DEBUG")
    process.start()
    yield process, namespace, "DEBUG"
    process.kill()


async def test_a_secured_node_end_to_end(
    cluster: Cluster,
    watching: tuple[Operator, str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operator, namespace, level = watching
    monkeypatch.setenv("RESONANCE_REFUSED_RETRY_S", "1")  # the bridges' refused-retry, for a quick test
    monkeypatch.setenv("RESONANCE_LOG_LEVEL", level)  # the bridges' too: the kubelet passes it on
    pki = Authority.make(tmp_path / "pki")
    server_pair, client_pair = pki.issue("lexamoris-server"), pki.issue("bridge", client=True)
    tokens = [f"token-{uuid.uuid4().hex}" for _ in range(3)]
    password = f"password-{uuid.uuid4().hex}"
    server = NodeServer(
        "lexamoris",
        port=0,
        printer=None,
        tls=pki.server_context(server_pair, require_client=True),
        token=tokens[0],
    )
    await server.start()
    for manifest in (
        secret(namespace, "node-ca", ca_crt=pki.cert.read_bytes()),
        secret(
            namespace,
            "bridge-client",
            "kubernetes.io/tls",
            tls_crt=client_pair.cert.read_bytes(),
            tls_key=client_pair.key.read_bytes(),
        ),
        secret(namespace, "node-token", token=tokens[0]),
        secret(namespace, "kafka-user", password=password),
    ):
        cluster.apply(manifest)
    logs = tmp_path / "pods"
    logs.mkdir()
    async with kubelet(
        cluster, namespace, logs, **{"lexamoris-server:8766": f"127.0.0.1:{server.port}"}
    ) as pods:
        cluster.apply(
            node(
                namespace,
                endpoint="wss://lexamoris-server:8766",
                topic=f"node.{uuid.uuid4().hex[:8]}",
                frequencyHz=1,
                tls={
                    "caSecretRef": {"name": "node-ca", "key": "ca.crt"},
                    "clientCertSecretRef": {"name": "bridge-client"},
                },
                auth={"tokenSecretRef": {"name": "node-token", "key": "token"}},
            )
        )
        # A second node's bridge authenticates to Kafka with SASL, from its password Secret: the
        # embedded broker knows no SASL, so this one only fails, but it must not leak the password.
        cluster.apply(
            node(
                namespace,
                "scram",
                endpoint="ws://nexus-server:8767",
                kafka={
                    "sasl": {
                        "mechanism": "SCRAM-SHA-512",
                        "username": "resonance",
                        "passwordSecretRef": {"name": "kafka-user", "key": "password"},
                    }
                },
            )
        )
        await until(lambda: websocket(cluster, namespace).get("status") == "True", 60, "a wss:// connection")
        assert server.last_authorization == f"Bearer {tokens[0]}"

        # The bridge's own ServiceAccount: no token mounted, and no RBAC (none is created).
        account = cluster.get("serviceaccount", BRIDGE, namespace) or {}
        assert account.get("automountServiceAccountToken") is False
        deployment = cluster.get("deployment", BRIDGE, namespace) or {}
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == BRIDGE
        digest = deployment["metadata"]["annotations"]["resonance.io/config-hash"]
        process = pods.pods[BRIDGE].process

        # Rotation: the Secret changes, then the node asks for the new token; the running bridge
        # reconnects with it, read from the updated file. No roll, no restart.
        cluster.apply(secret(namespace, "node-token", token=tokens[1]))
        mounted = logs / BRIDGE / "node-token" / "token"
        await until(lambda: mounted.read_text() == tokens[1], 20, "the kubelet to update the mounted file")
        server.token = tokens[1]
        server.drop()
        await until(lambda: server.last_authorization == f"Bearer {tokens[1]}", 30, "the rotated token")
        assert pods.pods[BRIDGE].process is process and process.poll() is None
        deployment = cluster.get("deployment", BRIDGE, namespace) or {}
        assert deployment["metadata"]["annotations"]["resonance.io/config-hash"] == digest

        # A token the node refuses: the condition says so and names the fix; the bridge keeps trying.
        server.token = tokens[2]
        server.drop()
        await until(lambda: "401" in websocket(cluster, namespace).get("message", ""), 30, "refused")
        message = websocket(cluster, namespace)["message"]
        assert "401" in message and "RESONANCE_AUTH_TOKEN_FILE" in message, message
        ready = condition(cluster.get("rn", "lexamoris", namespace), "Ready") or {}
        assert ready["status"] == "False", ready

        scram = logs / "resonance-bridge-scram.log"  # tansu: "UnsupportedSaslMechanismError"
        await until(lambda: scram.exists() and "Sasl" in scram.read_text(), 30, "the SASL bridge to try")

    everything = "\n".join(
        [
            operator.output(),
            *(path.read_text(errors="replace") for path in logs.glob("*.log")),
            cluster.kubectl(
                "get", "rn,deployments,serviceaccounts,events", "-n", namespace, "-o", "yaml"
            ).stdout,
        ]
    )
    key_line = client_pair.key.read_text().splitlines()[1]
    for value in (*tokens, password, key_line):
        assert value not in everything, f"a secret value leaked: {value[:12]}..."
    if level == "DEBUG":  # it was on: kopf's own lines, and the header lines, redacted
        assert " DEBUG kopf." in operator.output()
        assert "DEBUG websockets.client: > Authorization: ***" in (logs / f"{BRIDGE}.log").read_text()
