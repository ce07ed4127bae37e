"""The operator's own settings, from environment variables (the Helm chart sets them).

Each setting's variable and default are declared once, on its field (the bridge's `var`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError
from resonance_bridge.config import ConfigError, EnvReader, declared, var

from .model import PodTemplate

NO_TEMPLATE = PodTemplate()  # immutable (a frozen model): safe as a shared default


@dataclass(frozen=True, slots=True)
class Settings:
    bridge_image: str = var("RESONANCE_BRIDGE_IMAGE", "ghcr.io/resonance-io/resonance:0.1.0")
    kafka_bootstrap_servers: str = var("RESONANCE_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    watch_namespaces: tuple[str, ...] = var("RESONANCE_WATCH_NAMESPACES", ())  # empty: every namespace
    heartbeat_topic: str = var("RESONANCE_HEARTBEAT_TOPIC", "resonance.heartbeats")
    deadletter_topic: str = var("RESONANCE_DEADLETTER_TOPIC", "resonance.deadletter")
    kafka_enable_idempotence: bool = var("RESONANCE_KAFKA_ENABLE_IDEMPOTENCE", True)
    liveness_port: int = var("RESONANCE_OPERATOR_LIVENESS_PORT", 8081)
    metrics_port: int = var("RESONANCE_OPERATOR_METRICS_PORT", 8082)
    bridge_cpu_request: str = var("RESONANCE_BRIDGE_CPU_REQUEST", "50m")
    bridge_memory_request: str = var("RESONANCE_BRIDGE_MEMORY_REQUEST", "64Mi")
    bridge_memory_limit: str = var("RESONANCE_BRIDGE_MEMORY_LIMIT", "128Mi")
    # JSON in the shape of a ResonanceNode's spec.template: defaults of every bridge pod.
    bridge_pod_template: PodTemplate = var("RESONANCE_BRIDGE_POD_TEMPLATE", NO_TEMPLATE)


def _pod_template(raw: str) -> PodTemplate:
    try:
        return PodTemplate.model_validate_json(raw)
    except ValidationError as exc:
        raise ValueError(str(exc)) from exc


def load(env: Mapping[str, str]) -> Settings:
    r, d = EnvReader(env), declared(Settings)
    namespaces = tuple(n.strip() for n in r.text(d["watch_namespaces"][0], "").split(",") if n.strip())
    settings = Settings(
        bridge_image=r.text(*d["bridge_image"]),
        kafka_bootstrap_servers=r.text(*d["kafka_bootstrap_servers"]),
        watch_namespaces=namespaces,
        heartbeat_topic=r.topic(*d["heartbeat_topic"]),
        deadletter_topic=r.topic(*d["deadletter_topic"]),
        kafka_enable_idempotence=r.boolean(*d["kafka_enable_idempotence"]),
        liveness_port=r.integer(*d["liveness_port"], 1, 65535),
        metrics_port=r.integer(*d["metrics_port"], 1, 65535),
        bridge_cpu_request=r.text(*d["bridge_cpu_request"]),
        bridge_memory_request=r.text(*d["bridge_memory_request"]),
        bridge_memory_limit=r.text(*d["bridge_memory_limit"]),
        bridge_pod_template=r.parsed(
            *d["bridge_pod_template"],
            _pod_template,
            "use JSON in the shape of a ResonanceNode's spec.template, "
            'e.g. {"spec": {"nodeSelector": {"pool": "x"}}}',
        ),
    )
    if r.problems:
        raise ConfigError(r.problems)
    return settings
