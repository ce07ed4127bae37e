"""A listening node (spec.listen): the bridge serves a WebSocket endpoint that the node dials. Pure
builder of the Service in front of its bridge (builders.py adds the container's port)."""

from __future__ import annotations

from typing import Any

from .builders import deployment_name, labels, owner_reference, selector_labels
from .model import Node


def service(node: Node) -> dict[str, Any] | None:
    """A listening node's Service: where its node dials the bridge (spec.listen.service)."""
    listen = node.spec.listen
    if listen is None:
        return None
    meta: dict[str, Any] = {
        "name": deployment_name(node.name),
        "namespace": node.namespace,
        "labels": labels(node.name),
        "ownerReferences": [owner_reference(node)],
    }
    if listen.service.annotations:
        meta["annotations"] = dict(listen.service.annotations)
    port = {"name": "websocket", "port": listen.port, "targetPort": "websocket", "protocol": "TCP"}
    spec = {"type": listen.service.type, "selector": selector_labels(node.name), "ports": [port]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
