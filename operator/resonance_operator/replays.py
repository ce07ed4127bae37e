"""A node's replay request: its resonance.io/replay-from annotation, checked, then kept in a ConfigMap
of its own that its bridge pods mount (mounts.replay) and read every few seconds (README, "Replay").

A watched file, because it rolls nothing, needs no API access from the bridge (which holds no
Kubernetes credentials), works with any Kafka a node names (where the operator may only read
heartbeats), and the operator still never reads a Secret; the kubelet updates a mounted ConfigMap
within about a minute. A value that cannot be served (not a time, or a time in the future) is kept
as refused, never as a request: the decision outlives an operator restart, and a time that has
since passed is not carried out later.
"""

from __future__ import annotations

from typing import Any

from resonance_bridge.replaypoint import parse

from . import builders, mounts
from .model import REPLAY_ANNOTATION, Node
from .storage import Kube

KEY, REFUSED, WHY = "replay-from", "refused", "why"
Decided = tuple[str, str | None]  # (the value, why it is refused or None)


def config_map(node: Node, value: str, why: str | None) -> dict[str, Any]:
    meta = {
        "name": mounts.replay_config_map(builders.deployment_name(node.name)),
        "namespace": node.namespace,
        "labels": builders.labels(node.name),
        "ownerReferences": [builders.owner_reference(node)],
    }
    data = {KEY: value} if why is None else {REFUSED: value, WHY: why}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def decided(actual: dict[str, Any] | None) -> Decided | None:
    """What a node's ConfigMap holds: a request, or a refusal."""
    data = (actual or {}).get("data") or {}
    if KEY in data:
        return data[KEY], None
    return (data[REFUSED], data.get(WHY) or "refused") if REFUSED in data else None


def check(value: str) -> str | None:
    """Why the value cannot be served, naming the annotation; None if it can."""
    try:
        parse(value)
    except ValueError as exc:
        return f"{REPLAY_ANNOTATION}: {exc}"
    return None


async def carry(kube: Kube, node: Node) -> Decided | None:
    """The node's annotation into its ConfigMap (gone with the annotation); what stands."""
    name = mounts.replay_config_map(builders.deployment_name(node.name))
    actual = await kube.get_object(node.namespace, name, "ConfigMap")
    value = (node.replay_from or "").strip()
    if actual is not None and not builders.owned_by(actual, node.uid):
        return value, f"ConfigMap {node.namespace}/{name} exists and is not this node's: delete or rename it"
    if not value:
        if actual is not None:
            await kube.delete_object(node.namespace, name, "ConfigMap")
        return None
    held = decided(actual)
    if held is not None and held[0] == value:
        return held  # decided before: an operator restart, or the same value again
    why = check(value)
    await kube.apply_object(config_map(node, value, why))
    return value, why
