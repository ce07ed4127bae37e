"""The operator's own settings, from environment variables (the Helm chart sets them).

Each setting's variable and default are declared once, on its field (the bridge's `var`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pydantic import TypeAdapter, ValidationError
from resonance_bridge import security
from resonance_bridge.config import ConfigError, EnvReader, KafkaSecurity, declared, kafka_security, var

from .model import KafkaSecurityRefs, PodTemplate, Toleration

NO_TEMPLATE = PodTemplate()  # immutable (frozen models): safe as shared defaults
NO_SECURITY = KafkaSecurityRefs()
T = TypeVar("T")


# KafkaSecurity (the bridge's KAFKA_SECURITY_PROTOCOL, KAFKA_SSL_*, KAFKA_SASL_*): the operator's own
# heartbeat consumer on the default Kafka, from files the chart mounts.
@dataclass(frozen=True, slots=True)
class Settings(KafkaSecurity):
    bridge_image: str = var("RESONANCE_BRIDGE_IMAGE", "ghcr.io/resonance-io/resonance:0.1.0")
    kafka_bootstrap_servers: str = var("RESONANCE_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    watch_namespaces: tuple[str, ...] = var("RESONANCE_WATCH_NAMESPACES", ())  # empty: every namespace
    heartbeat_topic: str = var("RESONANCE_HEARTBEAT_TOPIC", "resonance.heartbeats")
    deadletter_topic: str = var("RESONANCE_DEADLETTER_TOPIC", "resonance.deadletter")
    replay_topic: str = var("RESONANCE_REPLAY_TOPIC", "resonance.replays")  # the bridges' replays
    kafka_enable_idempotence: bool = var("RESONANCE_KAFKA_ENABLE_IDEMPOTENCE", True)
    leader_election: bool = var("RESONANCE_LEADER_ELECTION", True)
    lease_namespace: str = var("RESONANCE_LEASE_NAMESPACE", "default")  # the chart: its own namespace
    lease_name: str = var("RESONANCE_LEASE_NAME", "resonance-operator")
    liveness_port: int = var("RESONANCE_OPERATOR_LIVENESS_PORT", 8081)
    metrics_port: int = var("RESONANCE_OPERATOR_METRICS_PORT", 8082)
    bridge_cpu_request: str = var("RESONANCE_BRIDGE_CPU_REQUEST", "50m")
    bridge_memory_request: str = var("RESONANCE_BRIDGE_MEMORY_REQUEST", "64Mi")
    bridge_memory_limit: str = var("RESONANCE_BRIDGE_MEMORY_LIMIT", "128Mi")
    # JSON in the shape of a ResonanceNode's spec.template: defaults of every bridge pod.
    bridge_pod_template: PodTemplate = var("RESONANCE_BRIDGE_POD_TEMPLATE", NO_TEMPLATE)
    # JSON in the shape of spec.kafka's tls and sasl: bridges on the default Kafka that set neither.
    bridge_kafka_security: KafkaSecurityRefs = var("RESONANCE_BRIDGE_KAFKA_SECURITY", NO_SECURITY)
    # Comma-separated host[:port] globs a node's endpoint and its own Kafka must match (empty: any):
    # a node's credentials go only where an administrator allows (policy.py).
    allowed_endpoints: tuple[str, ...] = var("RESONANCE_ALLOWED_ENDPOINTS", ())
    allowed_bootstrap_servers: tuple[str, ...] = var("RESONANCE_ALLOWED_BOOTSTRAP_SERVERS", ())
    # What a node's spec.template may add to its bridge pod (podpolicy.py): an allow-list each, empty
    # allowing nothing of its kind. The bridge_pod_template defaults are the administrator's: not checked.
    allowed_labels: tuple[str, ...] = var("RESONANCE_ALLOWED_LABELS", ())  # key patterns, * a glob
    allowed_annotations: tuple[str, ...] = var("RESONANCE_ALLOWED_ANNOTATIONS", ())  # key patterns
    # (node label key, value pattern) pairs, from JSON {"pool": ["edge", "gpu-*"]}.
    allowed_node_selectors: tuple[tuple[str, str], ...] = var("RESONANCE_ALLOWED_NODE_SELECTORS", ())
    allowed_tolerations: tuple[Toleration, ...] = var("RESONANCE_ALLOWED_TOLERATIONS", ())  # JSON list
    allowed_priority_classes: tuple[str, ...] = var("RESONANCE_ALLOWED_PRIORITY_CLASSES", ())
    # A listening node's Ingress or HTTPRoute host: DNS globs, {namespace} the node's; empty allows
    # none (a host is shared by the whole cluster: a node must not claim another team's).
    allowed_ingress_hosts: tuple[str, ...] = var("RESONANCE_ALLOWED_INGRESS_HOSTS", ())
    # Annotations of every Ingress (the controller's, e.g. timeouts): the administrator's, not a node's.
    ingress_annotations: tuple[tuple[str, str], ...] = var("RESONANCE_INGRESS_ANNOTATIONS", ())  # JSON {k: v}


def _json(adapter: TypeAdapter[T]) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        try:
            return adapter.validate_json(raw)
        except ValidationError as exc:
            raise ValueError(str(exc)) from exc

    return parse


def _selectors(raw: str) -> tuple[tuple[str, str], ...]:
    allowed = _json(TypeAdapter(dict[str, list[str]]))(raw)
    return tuple((key, value) for key, values in allowed.items() for value in values)


def load(env: Mapping[str, str]) -> Settings:
    r, d = EnvReader(env), declared(Settings)

    def names(field: str) -> tuple[str, ...]:  # a comma-separated list
        return tuple(n.strip() for n in r.text(d[field][0], "").split(",") if n.strip())

    settings = Settings(
        bridge_image=r.text(*d["bridge_image"]),
        kafka_bootstrap_servers=r.text(*d["kafka_bootstrap_servers"]),
        watch_namespaces=names("watch_namespaces"),
        heartbeat_topic=r.topic(*d["heartbeat_topic"]),
        deadletter_topic=r.topic(*d["deadletter_topic"]),
        replay_topic=r.topic(*d["replay_topic"]),
        kafka_enable_idempotence=r.boolean(*d["kafka_enable_idempotence"]),
        leader_election=r.boolean(*d["leader_election"]),
        lease_namespace=r.text(*d["lease_namespace"]),
        lease_name=r.text(*d["lease_name"]),
        liveness_port=r.integer(*d["liveness_port"], 1, 65535),
        metrics_port=r.integer(*d["metrics_port"], 1, 65535),
        bridge_cpu_request=r.text(*d["bridge_cpu_request"]),
        bridge_memory_request=r.text(*d["bridge_memory_request"]),
        bridge_memory_limit=r.text(*d["bridge_memory_limit"]),
        bridge_pod_template=r.parsed(
            *d["bridge_pod_template"],
            _json(TypeAdapter(PodTemplate)),
            "use JSON in the shape of a ResonanceNode's spec.template, "
            'e.g. {"spec": {"nodeSelector": {"pool": "x"}}}',
        ),
        bridge_kafka_security=r.parsed(
            *d["bridge_kafka_security"],
            _json(TypeAdapter(KafkaSecurityRefs)),
            "use JSON in the shape of a ResonanceNode's spec.kafka (tls, sasl), "
            'e.g. {"tls": {}, "sasl": {"mechanism": "SCRAM-SHA-512", "username": "resonance", '
            '"passwordSecretRef": {"name": "kafka-user", "key": "password"}}}',
        ),
        allowed_endpoints=names("allowed_endpoints"),
        allowed_bootstrap_servers=names("allowed_bootstrap_servers"),
        allowed_labels=names("allowed_labels"),
        allowed_annotations=names("allowed_annotations"),
        allowed_node_selectors=r.parsed(
            *d["allowed_node_selectors"],
            _selectors,
            'use JSON: node label keys to their allowed values (* a glob), e.g. {"pool": ["edge", "gpu-*"]}',
        ),
        allowed_tolerations=r.parsed(
            *d["allowed_tolerations"],
            _json(TypeAdapter(tuple[Toleration, ...])),
            "use a JSON list of Kubernetes tolerations, e.g. "
            '[{"key": "dedicated", "operator": "Equal", "value": "bridges", "effect": "NoSchedule"}]',
        ),
        allowed_priority_classes=names("allowed_priority_classes"),
        allowed_ingress_hosts=names("allowed_ingress_hosts"),
        ingress_annotations=r.parsed(
            *d["ingress_annotations"],
            lambda raw: tuple(_json(TypeAdapter(dict[str, str]))(raw).items()),
            'use a JSON object, e.g. {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}',
        ),
        **kafka_security(r),
    )
    r.problems += security.kafka_problems(settings)
    if r.problems:
        raise ConfigError(r.problems)
    return settings
