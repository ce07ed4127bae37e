"""The whole journey, as a user makes it: the chart installed (its operator run from its own pod spec
by the kubelet harness), the guide's two nodes and its Resonance server (a node that dials in) applied
from examples/, their reference nodes running, and then `kubectl get resonancenodes`, `resonance send`
and each node's reply in Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import uuid
from pathlib import Path

from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import Node, NodeServer
from resonance_local.nodeclient import NodeClient

from ..support.chart import helm
from ..support.harness import consume
from ..support.kube import ROOT, Cluster
from ..support.kubelet import running as kubelet
from ..support.poll import until


def columns(table: str) -> list[dict[str, str]]:
    """`kubectl get` output as rows of header -> value, cut where the header's columns start: a cell
    may be empty (LISTEN for a node the bridge dials, ENDPOINT for one that dials in)."""
    header, *rows = table.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    names = header.split()
    return [{n: row[a:b].strip() for n, a, b in zip(names, starts, ends, strict=True)} for row in rows]


async def both_ways(broker: EmbeddedBroker, node: Node, topic: str, word: str, stored: int) -> None:
    """`resonance send` to the node's topic reaches the node; the node's reply is acked, and is in
    Kafka (among the first `stored` records of the inbound topic). A new node starts at the end of
    its topic once its consumer has joined its group: a message sent before that is not for it.
    Sent until one arrives, as a user would retry."""

    def arrived() -> bool:
        return any((m.get("data") or {}).get("message") == word for m in node.received)

    send = ["send", "--type", "state", "--message", word, "--topic", topic]
    for _ in range(30):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "resonance_local", *send, "--bootstrap-servers", broker.bootstrap
        )
        assert await asyncio.wait_for(process.wait(), 30) == 0
        with contextlib.suppress(TimeoutError):
            await node.wait_for(arrived, 3)
        if arrived():
            break
    assert arrived(), f"the message never reached {node.name}"
    reply = {"type": "state_update", "anchor": "BOLZANO_71", "data": {"status": f"{word} reply"}}
    await node.send(json.dumps(reply))
    await node.wait_for(lambda: {"type": "ack", "original_type": "state_update"} in node.replies, 30)
    assert reply in [json.loads(r.value) for r in await consume(broker, "resonance.inbound", stored)]


async def test_install_apply_examples_and_relay_both_ways(
    cluster: Cluster, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    namespace = cluster.namespace(f"journey-{uuid.uuid4().hex[:6]}")  # not t-*: no other operator here
    # kube-lite reports version v0.0.0-master, which the chart's kubeVersion refuses: the chart is
    # rendered for the API server's real release and applied, as `helm install` would apply it.
    rendered = helm(
        "template", "resonance", str(ROOT / "charts" / "resonance"), "--namespace", namespace,
        "--kube-version", "1.36.0", "--set", f"kafka.bootstrapServers={broker.bootstrap}",
        "--set", "kafka.enableIdempotence=false", "--set", f"operator.watchNamespaces={{{namespace}}}",
    ).stdout  # fmt: skip
    applied = cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=rendered)
    assert "resonance-operator created" in applied.stdout, applied.stdout
    lexamoris, nexus = (
        NodeServer("lexamoris", port=0, printer=None),
        NodeServer("nexus", port=0, printer=None),
    )
    await lexamoris.start()
    await nexus.start()
    hosts = {
        "lexamoris-server:8766": f"127.0.0.1:{lexamoris.port}",
        "nexus-server:8767": f"127.0.0.1:{nexus.port}",
    }
    dialled: list[NodeClient] = []
    try:
        async with kubelet(cluster, namespace, tmp_path, **hosts) as pods:
            names = ("lexamoris", "nexus", "resonance-server")
            examples = [a for n in names for a in ("-f", str(ROOT / "examples" / f"{n}-node.yaml"))]
            cluster.kubectl("apply", "-n", namespace, *examples)
            # The node that dials in dials its bridge's Service, which leads to the pod's port.
            listening = "resonance-bridge-resonance-server"
            await until(lambda: listening in pods.pods, 60, "the listening bridge's pod")
            server = NodeClient(
                "resonance-server", f"ws://127.0.0.1:{pods.port(listening, 'websocket')}/", printer=None
            )
            await server.start()
            dialled.append(server)

            def table() -> list[dict[str, str]]:
                return columns(cluster.kubectl("get", "resonancenodes", "-n", namespace).stdout)

            def both_ready() -> list[dict[str, str]] | None:
                rows = table()
                return (
                    rows
                    if rows and all(r.get("READY") == "True" and "HEARTBEAT" in r for r in rows)
                    else None
                )

            rows = await until(both_ready, 120, lambda: f"every node Ready:\n{table()}")
            assert [r["NAME"] for r in rows] == list(names)
            assert rows[2]["LISTEN"] == "8765" and rows[2]["ENDPOINT"] == "" and rows[0]["LISTEN"] == ""
            wide = cluster.kubectl("get", "resonancenodes", "-n", namespace, "-o", "wide").stdout
            print(f"\n$ kubectl get resonancenodes -o wide\n{wide}")

            # Both ways, through the node the bridge dialled and through the one that dialled in.
            await both_ways(broker, lexamoris, "resonance.lexamoris", "journey", 1)
            await both_ways(broker, server, "resonance.server", "dialled", 2)
            body = cluster.get("rn", "resonance-server", namespace) or {}
            assert body["status"]["bridge"]["client"].startswith("127.0.0.1:"), body["status"]
    finally:
        for client in dialled:
            await client.close()
        await lexamoris.close()
        await nexus.close()
