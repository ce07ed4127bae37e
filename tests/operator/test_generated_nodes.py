"""Generated ResonanceNodes against the real API server (a server-side dry run: the CRD's schema, CEL
rules and defaults): each one is rejected with a message naming a spec field, or it is accepted and the
operator's builders turn it, as the server stored it, into a Deployment and a ServiceAccount that pass
strict Kubernetes schema validation. Nothing in between: no crash, no manifest the cluster would refuse."""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from resonance_operator import builders
from resonance_operator.model import Node
from resonance_operator.settings import Settings

from ..support.kube import Cluster, node

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
name = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
ref = st.fixed_dictionaries({"name": st.one_of(name, text), "key": st.one_of(name, text)})
maybe = st.one_of  # readability: maybe(good, bad)

SPEC = st.fixed_dictionaries(
    {},
    optional={
        "endpoint": maybe(st.sampled_from(["ws://n:8766", "wss://n.example:443/x", "http://n:1"]), text),
        "topic": maybe(st.from_regex(r"[a-zA-Z0-9._-]{1,30}", fullmatch=True), text),
        "anchor": maybe(st.just("BOLZANO_71"), text),
        "frequencyHz": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 200)),
        "sRoi": st.floats(allow_nan=False, allow_infinity=False),
        "ackMode": st.sampled_from(["ack", "send", "never"]),
        "maxInFlight": st.integers(-1, 2_000_000),
        "startFrom": st.sampled_from(["earliest", "latest", "middle"]),
        "shutdownGraceSeconds": st.integers(-1, 4000),
        "replicas": st.integers(-1, 20),
        "paused": st.booleans(),
        "tls": st.fixed_dictionaries(
            {},
            optional={
                "caSecretRef": ref,
                "clientCertSecretRef": st.fixed_dictionaries({"name": name}),
                "insecureSkipVerify": st.booleans(),
            },
        ),
        "auth": st.fixed_dictionaries({}, optional={"tokenSecretRef": ref, "header": maybe(name, text)}),
        "kafka": st.fixed_dictionaries(
            {},
            optional={
                "bootstrapServers": maybe(st.just("kafka-a:9092,kafka-b:9093"), text),
                "tls": st.fixed_dictionaries({}, optional={"caSecretRef": ref}),
                "sasl": st.fixed_dictionaries(
                    {"mechanism": st.sampled_from(["PLAIN", "SCRAM-SHA-512", "GSSAPI"])},
                    optional={"username": text, "usernameSecretRef": ref, "passwordSecretRef": ref},
                ),
            },
        ),
        "resources": st.fixed_dictionaries(
            {},
            optional={
                "requests": st.dictionaries(
                    st.sampled_from(["cpu", "memory"]), st.sampled_from(["50m", "64Mi", "x"])
                )
            },
        ),
    },
)
SETTINGS = Settings(bridge_image="resonance:test", kafka_bootstrap_servers="kafka:9092")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=SPEC)
def test_a_generated_node_is_rejected_naming_a_field_or_builds_a_valid_deployment(
    cluster: Cluster, namespace: str, spec: dict[str, Any]
) -> None:
    body = node(namespace, "generated")
    body["spec"].update(spec)
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(body), check=False
    )
    if result.returncode != 0:
        assert re.search(r"spec\.[A-Za-z]", result.stderr), result.stderr  # names the field
        return
    stored = json.loads(result.stdout)
    stored["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
    parsed = Node.from_body(stored)
    deployment = builders.deployment(parsed, SETTINGS)
    kubernetes_validate.validate(deployment, "1.37", strict=True)
    kubernetes_validate.validate(builders.service_account(parsed), "1.37", strict=True)
