"""Events are folded and rate-limited as Kubernetes' own recorders do: a flapping bridge shows as a
few Events with counts (`kubectl get events` COUNT), not dozens of objects a minute."""

from __future__ import annotations

import uuid
from typing import Any

from resonance_operator import events
from resonance_operator.metrics import EVENTS_HELD
from resonance_operator.storage import Kube

from ..support.kube import Cluster


def node(namespace: str) -> dict[str, Any]:
    return {"metadata": {"name": "lexamoris", "namespace": namespace, "uid": str(uuid.uuid4())}}


async def test_a_flapping_node_gets_two_events_with_counts(
    cluster: Cluster, namespace: str, kube: Kube
) -> None:
    flapping = node(namespace)
    for _ in range(20):  # 40 Events' worth in a few seconds: 42 in 60 s was seen
        await kube.post_event(
            flapping, "Warning", "NotReady", "WebSocketDisconnected: the bridge cannot reach it"
        )
        await kube.post_event(flapping, "Normal", "Ready", "BridgeReady: 1/1 bridge replicas ready")
    posted = cluster.items("events", namespace)
    assert sorted((e["reason"], e["count"]) for e in posted) == [("NotReady", 20), ("Ready", 20)]
    assert all(e["lastTimestamp"] >= e["firstTimestamp"] for e in posted)


async def test_a_node_posting_many_different_events_is_held_to_a_burst(
    cluster: Cluster, namespace: str, kube: Kube
) -> None:
    chatty, quiet = node(namespace), node(namespace)
    held = EVENTS_HELD._value.get()
    for i in range(events.BURST + 15):
        await kube.post_event(chatty, "Warning", "ReconcileFailed", f"attempt {i} failed")
    await kube.post_event(quiet, "Normal", "Created", "created Deployment resonance-bridge-quiet")
    uids = [e["involvedObject"]["uid"] for e in cluster.items("events", namespace)]
    assert uids.count(chatty["metadata"]["uid"]) == events.BURST
    assert uids.count(quiet["metadata"]["uid"]) == 1  # per node: another node is not held back
    assert EVENTS_HELD._value.get() - held == 15
