"""Reconcile one ResonanceNode's bridge Deployment: make it match the node. (Its status is the
monitor's: monitor.py writes it from this Deployment and from the bridge's heartbeats.)

Idempotent by construction: it reads what exists, writes only what differs, and can run any number
of times, concurrently or after a restart, without creating anything twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from . import builders
from .model import Node
from .settings import Settings
from .storage import Kube

Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class Outcome:
    action: Action
    name: str
    deployment: dict[str, Any] | None  # as the API server returned it
    message: str


async def reconcile(kube: Kube, node: Node, settings: Settings) -> Outcome:
    """Raises KubeError when the API server refuses (the caller reports it, kopf retries)."""
    await kube.ensure_service_account(builders.service_account(node))
    desired = builders.deployment(node, settings)
    name = desired["metadata"]["name"]
    actual = await kube.get_deployment(node.namespace, name)
    action: Action = "unchanged"
    if actual is None:
        actual = await kube.create_deployment(desired)
        action = "created"
        if actual is None:  # lost a race with a concurrent reconcile: take what it made
            actual, action = await kube.get_deployment(node.namespace, name), "unchanged"
    if actual is not None and not builders.is_subset(desired, actual):
        actual, action = await kube.apply_deployment(desired), "updated"
    digest = desired["metadata"]["annotations"][builders.HASH_ANNOTATION]
    message = {
        "created": f"created Deployment {name} (config {digest})",
        "updated": f"updated Deployment {name} to config {digest}",
        "unchanged": f"Deployment {name} is up to date",
    }[action]
    return Outcome(action, name, actual, message)
