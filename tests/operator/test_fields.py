"""What the operator stops setting leaves the Deployment: every spec in a sequence (auth, TLS, SASL
and template fields added and removed, replicas up and down) leaves exactly the Deployment built for
it, nothing stale. The API server tracks field ownership (server-side apply's managedFields) for
real here, so a field owned by another manager would stay and these tests would see it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import yaml
from resonance_operator import builders, fields, service
from resonance_operator.model import Node
from resonance_operator.settings import Settings
from resonance_operator.storage import FIELD_MANAGER, Kube

from ..support.kube import ROOT, Cluster
from .test_builders import SECURED

SETTINGS = Settings(
    bridge_image="ghcr.io/resonance-io/resonance:0.1.0",
    kafka_bootstrap_servers="kafka:9092",
    allowed_labels=("example.com/*",),
    allowed_annotations=("example.com/*",),
)
SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")
TEMPLATE = {
    "metadata": {"labels": {"example.com/team": "relay"}, "annotations": {"example.com/note": "x"}},
    "spec": {"affinity": {"nodeAffinity": {}}, "imagePullSecrets": [{"name": "pull"}]},
}


def node_of(namespace: str, uid: str, **spec: Any) -> Node:
    """A node the operator's own watch does not know (no such object): only these calls write."""
    body = yaml.safe_load((ROOT / "examples" / "lexamoris-node.yaml").read_text())
    body["metadata"].update(namespace=namespace, uid=uid)
    body["spec"].update(spec)
    return Node.from_body(body)


def managers(cluster: Cluster, namespace: str) -> set[str]:
    shown = cluster.kubectl(
        "get",
        "deployment",
        "resonance-bridge-lexamoris",
        "-n",
        namespace,
        "-o",
        "json",
        "--show-managed-fields",
    )
    return {e["manager"] for e in json.loads(shown.stdout)["metadata"]["managedFields"]}


def as_stored(cluster: Cluster, namespace: str) -> dict[str, Any]:
    actual = cluster.get("deployment", "resonance-bridge-lexamoris", namespace)
    assert actual is not None
    for key in SERVER_SET:
        actual["metadata"].pop(key, None)
    actual.pop("status", None)
    return actual


async def test_each_spec_in_a_sequence_leaves_exactly_its_deployment(
    cluster: Cluster, namespace: str, kube: Kube
) -> None:
    uid = str(uuid.uuid4())
    tls, auth, kafka = (
        {"endpoint": SECURED["endpoint"], "tls": SECURED["tls"]},
        {"auth": SECURED["auth"]},
        {"kafka": SECURED["kafka"]},
    )
    sequence: list[dict[str, Any]] = [  # created with fields that later specs drop
        {"replicas": 2, **auth, "template": TEMPLATE},
        {},
        {"replicas": 2},
        {"replicas": 2, **auth},
        {"replicas": 1, **auth, **tls},
        {**auth, **tls, **kafka},
        {**auth, **tls, **kafka, "template": TEMPLATE},
        {**tls, **kafka, "template": TEMPLATE, "replicas": 3},
        {**kafka, "replicas": 1},
        {"paused": True},
        {},
    ]
    for spec in sequence:
        node = node_of(namespace, uid, **spec)
        await service.reconcile(kube, node, SETTINGS)
        assert as_stored(cluster, namespace) == builders.deployment(node, SETTINGS), spec


async def test_a_deployment_made_by_an_earlier_version_is_adopted_and_left_with_nothing_stale(
    cluster: Cluster, namespace: str, kube: Kube
) -> None:
    """Earlier versions created Deployments under the client's default field manager, then applied:
    the fields set at creation (a rollingUpdate, a token's env and volume) stayed when the spec
    dropped them."""
    uid = str(uuid.uuid4())
    before = node_of(namespace, uid, replicas=2, **{"auth": SECURED["auth"]})
    made = builders.deployment(before, SETTINGS)
    await kube.apps.create_namespaced_deployment(namespace, made)  # type: ignore[arg-type]  # as earlier versions did
    assert managers(cluster, namespace) == {fields.LEGACY_MANAGER}
    after = node_of(namespace, uid)  # one replica (Recreate: no rollingUpdate), no auth
    await service.reconcile(kube, after, SETTINGS)
    assert as_stored(cluster, namespace) == builders.deployment(after, SETTINGS)
    assert managers(cluster, namespace) == {FIELD_MANAGER}
