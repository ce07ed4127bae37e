"""Reconcile one ResonanceNode: make its bridge Deployment match, then say so in its status.

Idempotent by construction: it reads what exists, writes only what differs, and can run any number
of times, concurrently or after a restart, without creating anything twice.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Literal

from . import builders, status
from .model import Node
from .settings import Settings
from .storage import Kube, KubeError

Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class Outcome:
    action: Action
    deployment: str
    ready: bool
    message: str


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def reconcile(kube: Kube, body: dict[str, Any], settings: Settings) -> Outcome:
    node = Node.from_body(body)
    desired = builders.deployment(node, settings)
    name = desired["metadata"]["name"]
    try:
        actual = await kube.get_deployment(node.namespace, name)
        action: Action = "unchanged"
        if actual is None:
            actual = await kube.create_deployment(desired)
            action = "created"
            if actual is None:  # lost a race with a concurrent reconcile: take what it made
                actual, action = await kube.get_deployment(node.namespace, name), "unchanged"
        if actual is not None and not builders.is_subset(desired, actual):
            actual, action = await kube.apply_deployment(desired), "updated"
    except KubeError as exc:
        await _write_status(kube, node, body, None, str(exc))
        raise
    ready = await _write_status(kube, node, body, actual, None)
    digest = desired["metadata"]["annotations"][builders.HASH_ANNOTATION]
    message = {
        "created": f"created Deployment {name} (config {digest})",
        "updated": f"updated Deployment {name} to config {digest}",
        "unchanged": f"Deployment {name} is up to date",
    }[action]
    return Outcome(action, name, ready, message)


async def _write_status(
    kube: Kube, node: Node, body: dict[str, Any], deployment: dict[str, Any] | None, error: str | None
) -> bool:
    previous = body.get("status") or {}
    new = status.node_status(node, deployment, previous, _now(), error)
    if not status.same(new, previous):
        await kube.patch_node_status(node.namespace, node.name, new)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in new["conditions"])
