"""The operator's own settings, from environment variables (the Helm chart sets them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from resonance_bridge.config import ConfigError, EnvReader

DEFAULT_IMAGE = "ghcr.io/resonance-io/resonance:0.1.0"


@dataclass(frozen=True, slots=True)
class Settings:
    bridge_image: str = DEFAULT_IMAGE
    kafka_bootstrap_servers: str = "kafka:9092"
    watch_namespaces: tuple[str, ...] = ()  # empty: every namespace
    heartbeat_topic: str = "resonance.heartbeats"
    deadletter_topic: str = "resonance.deadletter"
    kafka_enable_idempotence: bool = True
    liveness_port: int = 8081
    bridge_cpu_request: str = "50m"
    bridge_memory_request: str = "64Mi"
    bridge_memory_limit: str = "128Mi"


def load(env: Mapping[str, str]) -> Settings:
    r = EnvReader(env)
    namespaces = tuple(n.strip() for n in r.text("RESONANCE_WATCH_NAMESPACES", "").split(",") if n.strip())
    settings = Settings(
        bridge_image=r.text("RESONANCE_BRIDGE_IMAGE", DEFAULT_IMAGE),
        kafka_bootstrap_servers=r.text("RESONANCE_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092"),
        watch_namespaces=namespaces,
        heartbeat_topic=r.topic("RESONANCE_HEARTBEAT_TOPIC", "resonance.heartbeats"),
        deadletter_topic=r.topic("RESONANCE_DEADLETTER_TOPIC", "resonance.deadletter"),
        kafka_enable_idempotence=r.boolean("RESONANCE_KAFKA_ENABLE_IDEMPOTENCE", True),
        liveness_port=r.integer("RESONANCE_OPERATOR_LIVENESS_PORT", 8081, 1, 65535),
        bridge_cpu_request=r.text("RESONANCE_BRIDGE_CPU_REQUEST", "50m"),
        bridge_memory_request=r.text("RESONANCE_BRIDGE_MEMORY_REQUEST", "64Mi"),
        bridge_memory_limit=r.text("RESONANCE_BRIDGE_MEMORY_LIMIT", "128Mi"),
    )
    if r.problems:
        raise ConfigError(r.problems)
    return settings
