"""Pure builders: a ResonanceNode and the operator's settings in, Kubernetes manifests out.

`bridge_env` is the one place the bridge's environment is computed: the Deployment uses it, and so
does the local runner, so a bridge on a laptop and one in a cluster cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from resonance_bridge.config import termination_grace_seconds

from . import GROUP, KIND, VERSION, links, mounts
from .model import Node, NodeSpec, PodTemplate
from .mounts import Mounts
from .settings import Settings

HTTP_PORT = 8080
HASH_ANNOTATION = f"{GROUP}/config-hash"
MANAGED_BY = "resonance-operator"
BRIDGE_UID = 10001


def deployment_name(node_name: str) -> str:
    return f"resonance-bridge-{node_name}"


def selector_labels(node_name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "resonance-bridge", "app.kubernetes.io/instance": node_name}


def labels(node_name: str) -> dict[str, str]:
    return {
        **selector_labels(node_name),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "resonance",
    }


def selector(node_name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(node_name).items())


def _number(value: float) -> str:
    """0.043 -> '0.043', 5.0 -> '5': what a person would have typed."""
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


# Bridge variables set from a spec field (named as in the CRD): the one table of that mapping, also
# used to word the bridge's checks in spec terms for `resonance up` (resonance_local.manifests).
SPEC_ENV = {
    "RESONANCE_ENDPOINT": "endpoint",  # or endpoints[0] (links.py)
    "RESONANCE_STANDBY_ENDPOINTS": "endpoints",
    "RESONANCE_TOPIC": "topic",
    "RESONANCE_ANCHOR": "anchor",
    "RESONANCE_INBOUND_TOPIC": "inboundTopic",
    "RESONANCE_FREQUENCY_HZ": "frequencyHz",
    "RESONANCE_S_ROI": "sRoi",
    "RESONANCE_ACK_MODE": "ackMode",
    "RESONANCE_ON_UNDECODABLE": "onUndecodable",
    "RESONANCE_MAX_IN_FLIGHT": "maxInFlight",
    "RESONANCE_SHUTDOWN_GRACE_S": "shutdownGraceSeconds",
    "KAFKA_AUTO_OFFSET_RESET": "startFrom",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka.bootstrapServers",  # or the operator's default
}
LINKED = {"RESONANCE_ENDPOINT", "RESONANCE_STANDBY_ENDPOINTS"}  # set by links.dialling()
# The pod fields a template may set, by their names in the model and in a pod spec.
POD_FIELDS = {
    "node_selector": "nodeSelector",
    "tolerations": "tolerations",
    "affinity": "affinity",
    "priority_class_name": "priorityClassName",
    "image_pull_secrets": "imagePullSecrets",
}


def _field(spec: NodeSpec, path: str) -> Any:
    value: Any = spec.model_dump(by_alias=True)
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def bridge_env(name: str, namespace: str, spec: NodeSpec, settings: Settings, uid: str) -> dict[str, str]:
    """The bridge's configuration contract (see the README's bridge table), derived from the node."""
    from_spec = {var: _field(spec, path) for var, path in SPEC_ENV.items() if var not in LINKED}
    return {
        **links.listening(spec),
        "RESONANCE_NODE": name,
        # In its heartbeats: the operator counts them for this node object only, not a namesake's.
        "RESONANCE_NODE_UID": uid,
        **links.dialling(spec),
        **{
            var: _number(v) if isinstance(v, float) else str(v)
            for var, v in from_spec.items()
            if v is not None
        },
        "RESONANCE_HEARTBEAT_TOPIC": settings.heartbeat_topic,
        "RESONANCE_DEADLETTER_TOPIC": settings.deadletter_topic,
        "RESONANCE_REPLAY_TOPIC": settings.replay_topic,
        "RESONANCE_HTTP_PORT": str(HTTP_PORT),
        "KAFKA_BOOTSTRAP_SERVERS": from_spec["KAFKA_BOOTSTRAP_SERVERS"] or settings.kafka_bootstrap_servers,
        # Namespaced, so that nodes of the same name in two namespaces never share offsets.
        "KAFKA_GROUP_ID": f"resonance-bridge.{namespace}.{name}",
        "KAFKA_ENABLE_IDEMPOTENCE": "true" if settings.kafka_enable_idempotence else "false",
        # One replica takes every partition at once (no group join: seconds on Kafka); several share
        # them through the group.
        "KAFKA_ASSIGNMENT": "direct" if spec.replicas == 1 else "group",
    }


def _env_list(env: dict[str, str], secured: Mounts) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
    # The pod's own namespace (the downward API): in heartbeat records, for the node's status.
    items.append(
        {"name": "RESONANCE_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    )
    return items + secured.env


def _resources(spec: NodeSpec, settings: Settings) -> dict[str, Any]:
    if spec.resources and (spec.resources.requests or spec.resources.limits):
        return spec.resources.model_dump(exclude_defaults=True)
    return {
        "requests": {"cpu": settings.bridge_cpu_request, "memory": settings.bridge_memory_request},
        "limits": {"memory": settings.bridge_memory_limit},
    }


def config_hash(container: dict[str, Any]) -> str:
    """Hash of everything that shapes the bridge's pod: any change rolls the pods, nothing else does."""
    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:16]


def owner_reference(node: Node) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": node.name,
        "uid": node.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(body: dict[str, Any], uid: str) -> bool:
    """Whether an object's controller is the node with this uid."""
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in body.get("metadata", {}).get("ownerReferences") or ()
    )


def listen_ports(node: Node) -> list[dict[str, Any]]:
    listen = node.spec.listen
    return [] if listen is None else [{"name": "websocket", "containerPort": listen.port, "protocol": "TCP"}]


def container(node: Node, settings: Settings, secured: Mounts) -> dict[str, Any]:
    probe = {
        "httpGet": {"path": "/healthz", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }
    return {
        "name": "bridge",
        "image": settings.bridge_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["resonance", "bridge"],
        "env": _env_list(bridge_env(node.name, node.namespace, node.spec, settings, node.uid), secured),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}, *listen_ports(node)],
        "livenessProbe": probe,
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "resources": _resources(node.spec, settings),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        **({"volumeMounts": secured.mounts} if secured.mounts else {}),
    }


def pod_overrides(node: Node, settings: Settings) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """The bridge pod's extra labels, extra annotations and scheduling fields: the operator's
    defaults, with the node's spec.template on top (labels and annotations merged, fields replaced)."""
    default, own = settings.bridge_pod_template, node.spec.template or PodTemplate()
    extra_labels = {**default.metadata.labels, **own.metadata.labels}
    extra_annotations = {**default.metadata.annotations, **own.metadata.annotations}
    fields = {}
    for attr, key in POD_FIELDS.items():
        value = getattr(own.spec, attr)
        value = getattr(default.spec, attr) if value is None else value
        if value:
            fields[key] = value
    return extra_labels, extra_annotations, fields


def service_account(node: Node) -> dict[str, Any]:
    """The bridge's own identity: no token mounted and no RBAC (a bridge never calls the API), yet a
    name to bind cloud identities (e.g. IRSA, Workload Identity) to, one node at a time."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": deployment_name(node.name),
            "namespace": node.namespace,
            "labels": labels(node.name),
            "ownerReferences": [owner_reference(node)],
        },
        "automountServiceAccountToken": False,
    }


def strategy(replicas: int) -> dict[str, Any]:
    """One bridge (direct assignment) is replaced, not overlapped: two would both read every
    partition, each sending the node the same records. Several share the group, so in a rollout a
    record is acked by one of them and committed once; nothing is lost either way."""
    if replicas == 1:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def deployment(node: Node, settings: Settings) -> dict[str, Any]:
    secured = mounts.bridge(node.spec, settings.bridge_kafka_security, settings.kafka_bootstrap_servers)
    mounts.replay(secured, deployment_name(node.name))
    bridge = container(node, settings, secured)
    extra_labels, extra_annotations, scheduling = pod_overrides(node, settings)
    digest = config_hash({"container": bridge, "pod": [extra_labels, extra_annotations, scheduling]})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(node.name),
            "namespace": node.namespace,
            "labels": labels(node.name),
            "annotations": {HASH_ANNOTATION: digest},
            "ownerReferences": [owner_reference(node)],
        },
        "spec": {
            "replicas": 0 if node.spec.paused else node.spec.replicas,
            "selector": {"matchLabels": selector_labels(node.name)},
            "strategy": strategy(node.spec.replicas),
            "template": {
                "metadata": {
                    "labels": {**extra_labels, **labels(node.name)},  # ours win: the selector needs them
                    "annotations": {
                        **extra_annotations,
                        HASH_ANNOTATION: digest,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(HTTP_PORT),
                    },
                },
                "spec": {
                    "serviceAccountName": deployment_name(node.name),
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # The bridge's whole shutdown (grace, then closing) fits: it is never SIGKILLed.
                    "terminationGracePeriodSeconds": termination_grace_seconds(
                        node.spec.shutdown_grace_seconds
                    ),
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": BRIDGE_UID,
                        "runAsGroup": BRIDGE_UID,
                        "fsGroup": BRIDGE_UID,  # the mounted Secrets' group: readable at mode 0440
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [bridge],
                    **({"volumes": secured.volumes} if secured.volumes else {}),
                    **scheduling,
                },
            },
        },
    }


def is_subset(desired: Any, actual: Any) -> bool:
    """True if every field we set has our value in `actual`; fields the API server or other
    controllers added (defaults, status) are not ours to judge."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            k in actual and is_subset(v, actual[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
        )
    return bool(desired == actual)
