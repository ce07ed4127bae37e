"""The ResonanceNode spec as the API server hands it over (validated and defaulted by the CRD schema).

Parsing it once into a model keeps the builders free of dict lookups and their typos. The defaults
are the CRD's own (resonancenodes.yaml, shipped in this package): a manifest read on a laptop
(`resonance up`) is defaulted exactly as the API server defaults it."""

from __future__ import annotations

from importlib.resources import files
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

CRD = yaml.safe_load(files(__package__).joinpath("resonancenodes.yaml").read_text())
_SPEC = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


REPLAY_ANNOTATION = "resonance.io/replay-from"  # README, "Replay"


def crd_default(field: str) -> Any:
    """The default the CRD schema declares for spec.<field>."""
    return _SPEC[field]["default"]


class _Model(BaseModel):
    # The CRD schema already rejects unknown fields; ignoring them here lets an older operator
    # read a node written against a newer schema.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class SecretKeyRef(_Model):
    name: str
    key: str


class SecretRef(_Model):
    """A kubernetes.io/tls Secret: tls.crt and tls.key."""

    name: str


class Auth(_Model):
    token_secret_ref: SecretKeyRef | None = None
    header: str | None = None


class NodeTLS(_Model):
    ca_secret_ref: SecretKeyRef | None = None
    client_cert_secret_ref: SecretRef | None = None
    insecure_skip_verify: bool = False


class KafkaTLS(_Model):
    ca_secret_ref: SecretKeyRef | None = None
    client_cert_secret_ref: SecretRef | None = None


class SASL(_Model):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    password_secret_ref: SecretKeyRef
    username: str | None = None
    username_secret_ref: SecretKeyRef | None = None


class KafkaSecurityRefs(_Model):
    """How a bridge authenticates to Kafka: a node's spec.kafka, and the operator's default (the
    same shape), whose Secret names must exist in each node's namespace."""

    tls: KafkaTLS | None = None
    sasl: SASL | None = None

    @property
    def protocol(self) -> str:
        return ("SASL_" if self.sasl else "") + ("SSL" if self.tls else "PLAINTEXT")


class Kafka(KafkaSecurityRefs):
    bootstrap_servers: str | None = None


class Resources(_Model):
    requests: dict[str, int | str] = Field(default_factory=dict)
    limits: dict[str, int | str] = Field(default_factory=dict)


class PodMetadata(_Model):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Toleration(_Model):
    """The Kubernetes Toleration, with its defaults spelled out: for comparing two (podpolicy)."""

    key: str = ""
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    toleration_seconds: int | None = None


class PodSpec(_Model):
    """The scheduling fields of a bridge pod that a user may set (spec.template.spec)."""

    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None
    image_pull_secrets: list[dict[str, str]] | None = None


class PodTemplate(_Model):
    """Bridge pod overrides: a node's spec.template, and the operator's defaults (the same shape)."""

    metadata: PodMetadata = Field(default_factory=PodMetadata)
    spec: PodSpec = Field(default_factory=PodSpec)


class ListenAuth(_Model):
    token_secret_ref: SecretKeyRef


class ListenTLS(_Model):
    cert_secret_ref: SecretRef  # a kubernetes.io/tls Secret: the bridge's server certificate
    client_ca_secret_ref: SecretKeyRef | None = None  # mutual TLS


class ListenService(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    annotations: dict[str, str] = Field(default_factory=dict)


class ListenIngress(_Model):
    """An Ingress in front of the Service: its host must be in the operator's allowed hosts."""

    host: str
    class_name: str | None = None
    tls_secret_name: str | None = None  # the Ingress terminates TLS with it


class ParentRef(_Model):
    name: str
    namespace: str | None = None
    section_name: str | None = None


class ListenRoute(_Model):
    """A Gateway API HTTPRoute to the Service, attached to a Gateway someone else runs."""

    host: str
    parent_refs: list[ParentRef]


class Listen(_Model):
    """The node dials the bridge: where the bridge listens, and who may connect."""

    port: int = 8765
    path: str = "/"
    auth: ListenAuth | None = None
    anonymous: bool = False
    tls: ListenTLS | None = None
    allowed_origins: list[str] = Field(default_factory=list)
    service: ListenService = Field(default_factory=ListenService)
    ingress: ListenIngress | None = None
    http_route: ListenRoute | None = None


class Failover(_Model):
    attempts: int = 3
    failback_after_seconds: int = 30


class NodeSpec(_Model):
    endpoint: str | None = None  # the bridge dials the node; or, exclusive with it:
    endpoints: list[str] | None = None  # a primary and its standbys; or:
    listen: Listen | None = None  # the node dials the bridge
    topic: str
    anchor: str
    inbound_topic: str = crd_default("inboundTopic")
    frequency_hz: float = crd_default("frequencyHz")
    latency_objective_ms: int | None = None
    failover: Failover = Field(default_factory=Failover)
    s_roi: float = crd_default("sRoi")
    ack_mode: Literal["ack", "send"] = crd_default("ackMode")
    on_undecodable: Literal["deadLetter", "stop"] = crd_default("onUndecodable")
    max_in_flight: int = crd_default("maxInFlight")
    start_from: Literal["earliest", "latest"] = crd_default("startFrom")
    shutdown_grace_seconds: int = crd_default("shutdownGraceSeconds")
    replicas: int = crd_default("replicas")
    paused: bool = crd_default("paused")
    resources: Resources | None = None
    kafka: Kafka | None = None
    tls: NodeTLS | None = None
    auth: Auth | None = None
    template: PodTemplate | None = None


class Node(_Model):
    """The parts of a ResonanceNode the operator acts on."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: NodeSpec
    replay_from: str | None = None  # the resonance.io/replay-from annotation (replays.py)

    @classmethod
    def from_body(cls, body: Any) -> Node:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=meta.get("generation", 1),
            spec=NodeSpec.model_validate(dict(body["spec"])),
            replay_from=(meta.get("annotations") or {}).get(REPLAY_ANNOTATION),
        )
