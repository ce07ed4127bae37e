"""Replay through the cluster: `kubectl annotate rn ... resonance.io/replay-from=...` reaches a running
bridge (the kubelet harness mounts the node's ConfigMap and follows it, as a kubelet does) without a
roll; the node gets what is since the time again; the node's status and Events say so. A value that
cannot be served is refused, said on the node, and changes nothing."""

from __future__ import annotations

import asyncio
import collections
import datetime
import uuid
from pathlib import Path
from typing import Any

from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer
from resonance_operator import builders

from ..support.harness import an_hour_apart, create_topic, seqs
from ..support.kube import Cluster, Operator, condition, node
from ..support.kubelet import running as kubelet
from ..support.poll import until
from .test_data_plane import UP, conditions, events

CONFIG_MAP = "resonance-bridge-lexamoris-replay"


async def test_an_annotation_replays_a_running_bridge_and_a_value_it_cannot_serve_is_refused(
    cluster: Cluster, operator: Operator, namespace: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = f"node.{uuid.uuid4().hex[:8]}"
    await create_topic(broker, topic)
    hour = await an_hour_apart(broker, topic, 20, 20)
    server = NodeServer("lexamoris", port=0, printer=None)
    await server.start()

    def replay() -> dict[str, Any]:
        return ((cluster.get("rn", "lexamoris", namespace) or {}).get("status") or {}).get("replay") or {}

    async with kubelet(cluster, namespace, tmp_path, **{"lexamoris-server:8766": f"127.0.0.1:{server.port}"}):
        cluster.apply(node(namespace, topic=topic, startFrom="earliest", frequencyHz=1))
        await until(lambda: UP.items() <= conditions(cluster, namespace).items(), 60, "Ready")
        await server.wait_for(lambda: len(seqs(server)) >= 40, 30)
        hashed = (cluster.get("deployment", builders.deployment_name("lexamoris"), namespace) or {})[
            "metadata"
        ]
        when = datetime.datetime.fromtimestamp(hour / 1000, datetime.UTC).isoformat()
        cluster.kubectl("annotate", "rn", "lexamoris", "-n", namespace, f"resonance.io/replay-from={when}")
        made = await until(lambda: cluster.get("configmap", CONFIG_MAP, namespace), 30, "the ConfigMap")
        assert made["data"] == {"replay-from": when}
        assert made["metadata"]["ownerReferences"][0]["name"] == "lexamoris"
        await until(lambda: replay().get("completedAt"), 60, "the replay completed, in the status")
        again = collections.Counter(seqs(server)[40:])
        assert set(again) == set(range(20, 40)) and max(again.values()) == 1, again
        said = replay()
        assert said["requested"] == when and said["replayed"] == 20, said
        assert said["partitions"]["0"] == {"from": 20, "until": 40, "at": 40}, said
        replaying = condition(cluster.get("rn", "lexamoris", namespace), "Replay") or {}
        assert (replaying["status"], replaying["reason"]) == ("True", "Completed"), replaying
        deployment = cluster.get("deployment", builders.deployment_name("lexamoris"), namespace) or {}
        assert deployment["metadata"]["annotations"] == hashed["annotations"], "a replay rolls nothing"

        # A time in the future: refused, said on the node; the bridge's file is gone, nothing comes.
        seen = len(seqs(server))
        cluster.kubectl(
            "annotate",
            "rn",
            "lexamoris",
            "-n",
            namespace,
            "--overwrite",
            "resonance.io/replay-from=2999-01-01T00:00:00Z",
        )
        await until(lambda: replay().get("error"), 30, "the refusal in the status")
        refused = condition(cluster.get("rn", "lexamoris", namespace), "Replay") or {}
        assert (refused["status"], refused["reason"]) == ("False", "Refused"), refused
        assert refused["message"].startswith(
            "resonance.io/replay-from: 2999-01-01T00:00:00Z is in the future"
        )
        assert set((cluster.get("configmap", CONFIG_MAP, namespace) or {})["data"]) == {"refused", "why"}
        await asyncio.sleep(3)
        assert len(seqs(server)) == seen
    await server.close()
    posted = events(cluster, namespace)
    reasons = collections.Counter(reason for _, reason, _ in posted)
    assert reasons["ReplayStarted"] == 1 and reasons["ReplayCompleted"] == 1, posted
    assert ("Warning", "ReplayRefused", refused["message"]) in posted, posted
