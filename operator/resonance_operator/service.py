"""Reconcile one ResonanceNode's bridge Deployment: make it match the node. (Its status is the
monitor's: monitor.py writes it from this Deployment and from the bridge's heartbeats.)

Idempotent by construction: it reads what exists, writes only what differs, and can run any number
of times, concurrently or after a restart, without creating anything twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from . import builders, fields, listening, policy
from .model import Node
from .settings import Settings
from .storage import FIELD_MANAGER, Kube, KubeError

Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class Outcome:
    action: Action
    name: str
    deployment: dict[str, Any] | None  # as the API server returned it
    message: str


class Refused(Exception):
    """The node is not acted on, and nothing of it was written: `reason` is Ready's (NotAllowed: the
    spec breaks the operator's policy, fixed by a spec change; Conflict: an object of the bridge's
    name belongs to someone else, retried in case it goes)."""

    def __init__(self, reason: Literal["NotAllowed", "Conflict"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_owner(node: Node, kind: str, actual: dict[str, Any] | None) -> None:
    """Only objects this node owns (by uid) are written: a node's author must not be able to take
    over a workload someone else made, by naming a node after it."""
    if actual is None or builders.owned_by(actual, node.uid):
        return
    meta = actual["metadata"]
    owners = [f"{o.get('kind')} {o.get('name')}" for o in meta.get("ownerReferences") or ()]
    raise Refused(
        "Conflict",
        f"{kind} {meta['namespace']}/{meta['name']} exists and is not this node's (owned by "
        f"{', '.join(owners) or 'nobody'}): the operator leaves it alone; delete or rename it, or "
        "give the node another name",
    )


async def _listening(kube: Kube, node: Node, settings: Settings, before: dict[str, Any] | None) -> None:
    """A listening node's Service, and its Ingress or HTTPRoute, as specified. What it no longer asks
    for is deleted, if its Deployment (as it was before this reconcile) listened. Nothing for a node
    that dials and did not listen before."""
    name, listened = builders.deployment_name(node.name), before is not None and _listened(before)
    exposure = listening.exposure(node, settings)
    wanted = {"Service": listening.service(node)} | {
        kind: exposure if exposure is not None and exposure["kind"] == kind else None
        for _, kind in listening.EXPOSURES
    }
    for kind, desired in wanted.items():
        if desired is None and not listened:
            continue
        actual = await kube.get_object(node.namespace, name, kind)
        if desired is None:
            if actual is not None and builders.owned_by(actual, node.uid):
                await kube.delete_object(node.namespace, name, kind)
            continue
        _check_owner(node, kind, actual)
        if actual is None or not builders.is_subset(desired, actual):
            try:
                await kube.apply_object(desired)
            except KubeError as exc:
                if exc.status != 404:
                    raise
                field = "ingress" if kind == "Ingress" else "httpRoute"
                raise KubeError(
                    f"spec.listen.{field}",
                    404,
                    None,
                    f"this cluster does not serve "
                    f"{desired['apiVersion']} {kind}: install it, or use another way in",
                ) from exc


def _listened(deployment: dict[str, Any]) -> bool:
    containers = deployment["spec"]["template"]["spec"].get("containers") or ()
    return any(p.get("name") == "websocket" for c in containers for p in c.get("ports") or ())


async def reconcile(kube: Kube, node: Node, settings: Settings) -> Outcome:
    """Raises Refused (nothing written) or KubeError when the API server refuses (the caller reports
    it, kopf retries)."""
    if problems := policy.problems(node, settings):
        raise Refused("NotAllowed", "; ".join(problems))
    desired = builders.deployment(node, settings)
    name = desired["metadata"]["name"]
    actual = before = await kube.get_object(node.namespace, name)
    _check_owner(node, "Deployment", actual)
    account = builders.service_account(node)
    _check_owner(node, "ServiceAccount", await kube.ensure_service_account(account, actual is None))
    action: Action = "unchanged"
    if actual is None:
        actual = await kube.create_deployment(desired)
        action = "created"
        if actual is None:  # lost a race with a concurrent reconcile: take what it made
            actual, action = await kube.get_object(node.namespace, name), "unchanged"
            _check_owner(node, "Deployment", actual)
    legacy = fields.adopted(actual["metadata"].get("managedFields") or [], FIELD_MANAGER) if actual else None
    if actual is not None and legacy is not None:  # made by an earlier version: its fields become ours
        await kube.own_deployment_fields(actual, legacy)
    if actual is not None and (legacy is not None or not builders.is_subset(desired, actual)):
        actual, action = await kube.apply_object(desired), "updated"
    await _listening(kube, node, settings, before)
    digest = desired["metadata"]["annotations"][builders.HASH_ANNOTATION]
    message = {
        "created": f"created Deployment {name} (config {digest})",
        "updated": f"updated Deployment {name} to config {digest}",
        "unchanged": f"Deployment {name} is up to date",
    }[action]
    return Outcome(action, name, actual, message)
