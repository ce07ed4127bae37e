"""A listening node (spec.listen): the bridge serves a WebSocket endpoint that the node dials. Pure
builders of the Service in front of its bridge (builders.py adds the container's port), and of the
Ingress or HTTPRoute in front of that Service."""

from __future__ import annotations

from typing import Any

from .builders import deployment_name, labels, owner_reference, selector_labels
from .model import Node
from .settings import Settings

# The kinds in front of a listening bridge, as (apiVersion, kind): the operator deletes the ones a
# node no longer asks for.
EXPOSURES = (("networking.k8s.io/v1", "Ingress"), ("gateway.networking.k8s.io/v1", "HTTPRoute"))


def service(node: Node) -> dict[str, Any] | None:
    """A listening node's Service: where its node dials the bridge (spec.listen.service)."""
    listen = node.spec.listen
    if listen is None:
        return None
    meta = _metadata(node)
    if listen.service.annotations:
        meta["annotations"] = dict(listen.service.annotations)
    port = {"name": "websocket", "port": listen.port, "targetPort": "websocket", "protocol": "TCP"}
    spec = {"type": listen.service.type, "selector": selector_labels(node.name), "ports": [port]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def exposure(node: Node, settings: Settings) -> dict[str, Any] | None:
    """The Ingress or HTTPRoute a listening node asks for (spec.listen.ingress, .httpRoute), or None."""
    listen = node.spec.listen
    if listen is None:
        return None
    backend = deployment_name(node.name)
    if listen.ingress is not None:
        ingress = listen.ingress
        meta = _metadata(node)
        if settings.ingress_annotations:
            meta["annotations"] = dict(settings.ingress_annotations)
        path = {
            "path": listen.path,
            "pathType": "Prefix",
            "backend": {"service": {"name": backend, "port": {"name": "websocket"}}},
        }
        spec: dict[str, Any] = {"rules": [{"host": ingress.host, "http": {"paths": [path]}}]}
        if ingress.class_name:
            spec["ingressClassName"] = ingress.class_name
        if ingress.tls_secret_name:
            spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
        return {"apiVersion": EXPOSURES[0][0], "kind": "Ingress", "metadata": meta, "spec": spec}
    if listen.http_route is not None:
        route = listen.http_route
        parents = [p.model_dump(by_alias=True, exclude_none=True) for p in route.parent_refs]
        rule = {
            "matches": [{"path": {"type": "PathPrefix", "value": listen.path}}],
            "backendRefs": [{"name": backend, "port": listen.port}],
        }
        spec = {"parentRefs": parents, "hostnames": [route.host], "rules": [rule]}
        return {"apiVersion": EXPOSURES[1][0], "kind": "HTTPRoute", "metadata": _metadata(node), "spec": spec}
    return None


def _metadata(node: Node) -> dict[str, Any]:
    return {
        "name": deployment_name(node.name),
        "namespace": node.namespace,
        "labels": labels(node.name),
        "ownerReferences": [owner_reference(node)],
    }
