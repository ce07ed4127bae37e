"""The ResonanceNode spec as the API server hands it over (validated and defaulted by the CRD schema).

Parsing it once into a model keeps the builders free of dict lookups and their typos."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    # The CRD schema already rejects unknown fields; ignoring them here lets an older operator
    # read a node written against a newer schema.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class SecretKeyRef(_Model):
    name: str
    key: str


class Auth(_Model):
    token_secret_ref: SecretKeyRef | None = None


class Kafka(_Model):
    bootstrap_servers: str | None = None


class Resources(_Model):
    requests: dict[str, int | str] = Field(default_factory=dict)
    limits: dict[str, int | str] = Field(default_factory=dict)


class NodeSpec(_Model):
    endpoint: str
    topic: str
    anchor: str
    inbound_topic: str = "resonance.inbound"
    frequency_hz: float = 0.043
    s_roi: float = 0.502
    ack_mode: Literal["ack", "send"] = "ack"
    max_in_flight: int = 1000
    shutdown_grace_seconds: int = 10
    replicas: int = 1
    paused: bool = False
    resources: Resources | None = None
    kafka: Kafka | None = None
    auth: Auth | None = None


class Node(_Model):
    """The parts of a ResonanceNode the operator acts on."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: NodeSpec

    @classmethod
    def from_body(cls, body: Any) -> Node:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=meta.get("generation", 1),
            spec=NodeSpec.model_validate(dict(body["spec"])),
        )
