"""The chart's ValidatingAdmissionPolicy on an API server that runs it and authorizes users who are not
admins (support/admission.py): a node's author may name only Secrets they may read."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..support.admission import Guarded, Review, guarded
from ..support.chart import render
from ..support.kube import Cluster, node
from ..support.poll import until

READABLE = "author-token"  # the one Secret the node's author may get besides the chart's role
# What the chart's node-author ClusterRole grants, as (API group, resource, verb).
AUTHOR = {
    (group, resource, verb)
    for doc in render()
    if doc["kind"] == "ClusterRole" and doc["metadata"]["name"].endswith("-node-author")
    for rule in doc["rules"]
    for group in rule["apiGroups"]
    for resource in rule["resources"]
    for verb in rule["verbs"]
}


def rule(review: Review) -> bool:
    """The node author's rights: the chart's node-author role, `get` on one Secret, nothing else."""
    if review.get("user") != "author":
        return False
    attributes = review.get("resourceAttributes") or {}
    resource = attributes.get("resource", "") + (f"/{sub}" if (sub := attributes.get("subresource")) else "")
    if (attributes.get("group", ""), resource, attributes.get("verb")) in AUTHOR:
        return True
    return resource == "secrets" and attributes.get("verb") == "get" and attributes.get("name") == READABLE


def test_the_node_author_role_grants_nodes_and_nothing_else() -> None:
    assert ("resonance.io", "resonancenodes", "create") in AUTHOR
    assert {group for group, _, _ in AUTHOR} == {"resonance.io"}, "no Secrets, pods or Deployments"


@pytest.fixture(scope="module")
def server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    if cluster.controllers or not (cluster.kubeconfig.parent / "bin" / "kube-lite-apiserver").exists():
        pytest.skip("starts a second API server from kube-lite's binaries, on its etcd: kube-lite only")
    for doc in render(namespace="resonance"):
        if doc["kind"].startswith("ValidatingAdmissionPolicy"):
            cluster.apply(doc)
    with guarded(cluster, Path(tmp_path_factory.mktemp("guarded")), rule, ("author",)) as server:
        yield server


def listening(**listen: object) -> dict[str, Any]:
    """A listening node's spec (which sets no spec.auth), with its token a Secret the author may read."""
    return {"endpoint": None, "auth": None, "listen": {"auth": token(READABLE), **listen}}


def token(name: str) -> dict[str, object]:
    return {"tokenSecretRef": {"name": name, "key": "token"}}


async def test_a_node_may_name_only_secrets_its_author_can_read(server: Guarded, cluster: Cluster) -> None:
    namespace = cluster.namespace(f"a-{uuid.uuid4().hex[:8]}")
    author, admin = server.user("author"), server.user("admin")

    def refused(manifest: dict[str, object]) -> str:
        """stderr of a refused apply; '' (and the node deleted again) if it was accepted."""
        result = author.apply(manifest, check=False)
        if result.returncode == 0:
            admin.kubectl("delete", "rn", "probe", "-n", namespace, check=False)
            return ""
        if "no matches for kind" in result.stderr:  # kubectl's discovery does not list the CRD yet
            return ""
        return result.stderr

    # The policy reaches the server's informer a moment after it starts.
    stolen = node(namespace, "probe", auth=token("admin-token"))
    said = await until(lambda: refused(stolen), 30, "the policy to be in force")
    assert "spec.auth.tokenSecretRef: you may not get Secret " + f"{namespace}/admin-token" in said, said
    assert "ValidatingAdmissionPolicy" in said, said

    author.apply(node(namespace, "mine", auth=token(READABLE)))  # a Secret the author may read
    author.apply(node(namespace, "plain"))  # none at all
    sasl = {"sasl": {"mechanism": "PLAIN", "username": "u",
                     "passwordSecretRef": {"name": "kafka-admin", "key": "password"}}}  # fmt: skip
    cases: list[tuple[str, dict[str, Any]]] = [
        ("spec.kafka.sasl.passwordSecretRef", {"kafka": sasl}),
        (
            "spec.tls.caSecretRef",
            {"endpoint": "wss://n:1", "tls": {"caSecretRef": {"name": "ca", "key": "c"}}},
        ),
        ("spec.kafka.tls.clientCertSecretRef", {"kafka": {"tls": {"clientCertSecretRef": {"name": "kc"}}}}),
        # A listening node: the server certificate its bridge presents, and its Ingress's.
        ("spec.listen.tls.certSecretRef", listening(tls={"certSecretRef": {"name": "team-b-cert"}})),
        (
            "spec.listen.ingress.tlsSecretName",
            listening(ingress={"host": "a.example.com", "tlsSecretName": "w"}),
        ),
    ]
    for field, spec in cases:
        said = author.apply(node(namespace, "mine", **({"auth": token(READABLE)} | spec)), check=False).stderr
        assert f"{field}: you may not get Secret" in said, said
    # Someone who may read the Secret (an admin) names it; the author edits that node's spec: refused,
    # since the edit would send it elsewhere. Touching only metadata is not refused.
    admin.apply(node(namespace, "shared", auth=token("admin-token")))
    said = author.apply(node(namespace, "shared", auth=token("admin-token"), replicas=2), check=False).stderr
    assert "spec.auth.tokenSecretRef: you may not get Secret" in said, said
    author.kubectl("annotate", "rn", "shared", "-n", namespace, "example.com/note=ok")
    asked = {
        r["resourceAttributes"].get("name")
        for r in server.reviews
        if r.get("resourceAttributes", {}).get("resource") == "secrets"
    }
    assert {"admin-token", READABLE} <= asked, asked
