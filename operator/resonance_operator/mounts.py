"""Secret references in, the bridge's files out: volumes, their mounts and the *_FILE variables.

Secrets reach a bridge only as read-only files (a mounted Secret follows rotations; the bridge reads
the token at every connect and the Kafka password at every client start; a listening bridge its
token at every handshake, and its certificate when it changes), never as values in the
Deployment: the operator never reads a Secret, it only names one. Non-secret names (a SASL user
from a Secret) come through `secretKeyRef`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .model import SASL, KafkaSecurityRefs, KafkaTLS, Listen, NodeSpec, NodeTLS, SecretKeyRef, SecretRef

ROOT = "/etc/resonance"
MODE = 0o440  # owner and group (the pod's fsGroup) read; nobody writes


@dataclass
class Mounts:
    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)

    def secret(self, volume: str, secret: str, files: dict[str, str]) -> dict[str, str]:
        """Mount `secret`'s keys (key -> file name) at ROOT/volume; the paths of the files."""
        items = [{"key": key, "path": path} for key, path in files.items()]
        self.volumes.append(
            {"name": volume, "secret": {"secretName": secret, "items": items, "defaultMode": MODE}}
        )
        # No subPath: a subPath mount would never see the Secret's updates.
        self.mounts.append({"name": volume, "mountPath": f"{ROOT}/{volume}", "readOnly": True})
        return {key: f"{ROOT}/{volume}/{path}" for key, path in files.items()}

    def value(self, variable: str, value: str) -> None:
        self.env.append({"name": variable, "value": value})

    def file(self, variable: str, volume: str, ref: SecretKeyRef, name: str) -> None:
        self.value(variable, self.secret(volume, ref.name, {ref.key: name})[ref.key])

    def ca(self, variable: str, volume: str, ref: SecretKeyRef | None) -> None:
        if ref is not None:
            self.file(variable, volume, ref, "ca.crt")

    def pair(self, prefix: str, volume: str, ref: SecretRef | None) -> None:
        if ref is not None:
            paths = self.secret(volume, ref.name, {"tls.crt": "tls.crt", "tls.key": "tls.key"})
            self.value(f"{prefix}_CERT_FILE", paths["tls.crt"])
            self.value(f"{prefix}_KEY_FILE", paths["tls.key"])


def _node(m: Mounts, spec: NodeSpec) -> None:
    tls = spec.tls or NodeTLS()
    m.ca("RESONANCE_TLS_CA_FILE", "node-ca", tls.ca_secret_ref)
    m.pair("RESONANCE_TLS", "node-cert", tls.client_cert_secret_ref)
    if tls.insecure_skip_verify:
        m.value("RESONANCE_TLS_INSECURE_SKIP_VERIFY", "true")
    auth = spec.auth
    if auth and auth.token_secret_ref:
        m.file("RESONANCE_AUTH_TOKEN_FILE", "node-token", auth.token_secret_ref, "token")
    if auth and auth.header:
        m.value("RESONANCE_AUTH_HEADER", auth.header)


def _listen(m: Mounts, listen: Listen) -> None:
    """A listening node's secrets (its port, path and origins are plain: builders.bridge_env)."""
    if listen.auth is not None:
        m.file("RESONANCE_LISTEN_TOKEN_FILE", "listen-token", listen.auth.token_secret_ref, "token")
    if listen.tls is not None:
        m.pair("RESONANCE_LISTEN_TLS", "listen-cert", listen.tls.cert_secret_ref)
        m.ca("RESONANCE_LISTEN_CLIENT_CA_FILE", "listen-client-ca", listen.tls.client_ca_secret_ref)


def replay_config_map(bridge: str) -> str:
    """The ConfigMap holding a node's replay request (replays.py), by its bridge's name."""
    return f"{bridge}-replay"


def replay(m: Mounts, bridge: str) -> None:
    """The node's replay request (its resonance.io/replay-from annotation, which the operator keeps in
    a ConfigMap of its own): a file the bridge reads every few seconds. Optional: a node never
    replayed has none; the kubelet fills the folder once the ConfigMap exists and follows its
    changes, so a replay rolls no pod."""
    volume = {"name": replay_config_map(bridge), "optional": True, "defaultMode": MODE}
    m.volumes.append({"name": "replay", "configMap": volume})
    m.mounts.append({"name": "replay", "mountPath": f"{ROOT}/replay", "readOnly": True})
    m.value("RESONANCE_REPLAY_FILE", f"{ROOT}/replay/replay-from")


def kafka(m: Mounts, security: KafkaSecurityRefs) -> None:
    """The bridge's KAFKA_* security variables and files; the chart mounts the operator's default
    the same way into the operator's own pod (its heartbeat consumer): tested to match."""
    if security.protocol == "PLAINTEXT":
        return
    m.value("KAFKA_SECURITY_PROTOCOL", security.protocol)
    tls = security.tls or KafkaTLS()
    m.ca("KAFKA_SSL_CA_FILE", "kafka-ca", tls.ca_secret_ref)
    m.pair("KAFKA_SSL", "kafka-cert", tls.client_cert_secret_ref)
    if security.sasl is not None:
        _sasl(m, security.sasl)


def _sasl(m: Mounts, sasl: SASL) -> None:
    m.value("KAFKA_SASL_MECHANISM", sasl.mechanism)
    if sasl.username_secret_ref is not None:
        ref = sasl.username_secret_ref
        m.env.append(
            {"name": "KAFKA_SASL_USERNAME", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )
    else:
        m.value("KAFKA_SASL_USERNAME", sasl.username or "")
    m.file("KAFKA_SASL_PASSWORD_FILE", "kafka-password", sasl.password_secret_ref, "password")


def kafka_security(spec: NodeSpec, default: KafkaSecurityRefs, default_bootstrap: str) -> KafkaSecurityRefs:
    """The node's own Kafka security if it sets any; else the operator's default, when the node
    is on the operator's default Kafka (another cluster's security cannot be guessed)."""
    own = spec.kafka
    if own and (own.tls is not None or own.sasl is not None):
        return KafkaSecurityRefs(tls=own.tls, sasl=own.sasl)
    if own is None or own.bootstrap_servers in (None, default_bootstrap):
        return default
    return KafkaSecurityRefs()


def bridge(spec: NodeSpec, default: KafkaSecurityRefs, default_bootstrap: str) -> Mounts:
    m = Mounts()
    if spec.listen is not None:
        _listen(m, spec.listen)
    else:
        _node(m, spec)
    kafka(m, kafka_security(spec, default, default_bootstrap))
    return m
