"""Every API call the operator made, read from the API server's audit log, is one the chart's RBAC grants.

The chart's Roles are tested to grant exactly grants.API_CALLS (tests/test_chart.py); this test makes the
operator do all its kinds of work and checks that it never called anything outside that list."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from resonance_operator.grants import API_CALLS, CLUSTER_READS, LEASE_CALLS

from ..support.kube import Cluster, Operator, node
from ..support.poll import until

OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/")  # kopf's own client, and kubernetes_asyncio's


def recorded_calls(cluster: Cluster) -> set[tuple[str, str, str]]:
    assert cluster.audit_log is not None
    calls = set()
    for line in cluster.audit_log.read_text().splitlines():
        event: dict[str, Any] = json.loads(line)
        ref = event.get("objectRef")
        if not ref or not event.get("userAgent", "").startswith(OPERATOR_AGENTS):
            continue  # kubectl (the tests), the server's own loops, or a non-resource URL such as /version
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        calls.add((ref.get("apiGroup", ""), resource, event["verb"]))
    return calls


async def test_operator_calls_only_what_rbac_grants(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    if cluster.audit_log is None:
        pytest.skip("reads the API server's audit log: kube-lite or envtest (KUBEBUILDER_ASSETS)")
    cluster.apply(node(namespace))  # create: deployment created, status patched, event posted
    await until(lambda: cluster.get("deployment", "resonance-bridge-lexamoris", namespace), 30, "the bridge")
    cluster.kubectl("delete", "deployment", "resonance-bridge-lexamoris", "-n", namespace)  # recreated
    await until(
        lambda: cluster.get("deployment", "resonance-bridge-lexamoris", namespace), 30, "the new bridge"
    )
    cluster.apply(node(namespace, frequencyHz=3))  # update: server-side apply
    await until(
        lambda: any(v == "patch" and r == "deployments" for _, r, v in recorded_calls(cluster)),
        30,
        "a Deployment patch",
    )
    calls = recorded_calls(cluster)
    assert ("apps", "deployments", "patch") in calls and (  # created and updated by apply
        "resonance.io",
        "resonancenodes/status",
        "patch",
    ) in calls
    assert calls - API_CALLS - CLUSTER_READS - LEASE_CALLS == set(), (
        "the operator called what the chart's RBAC does not grant"
    )


async def test_the_operator_lists_and_watches_only_its_bridge_deployments(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    """The API server filters the Deployments the operator lists and watches by the bridges' label:
    kopf's watch took every Deployment of the cluster, most of the operator's memory and traffic."""
    if cluster.audit_log is None:
        pytest.skip("reads the API server's audit log: kube-lite or envtest (KUBEBUILDER_ASSETS)")
    cluster.apply(node(namespace))
    await until(lambda: cluster.get("deployment", "resonance-bridge-lexamoris", namespace), 30, "the bridge")
    reads = []
    for line in cluster.audit_log.read_text().splitlines():
        event: dict[str, Any] = json.loads(line)
        ref = event.get("objectRef") or {}
        agent = event.get("userAgent", "")
        if (
            ref.get("resource") == "deployments"
            and event["verb"] in ("list", "watch")
            and agent.startswith(OPERATOR_AGENTS)
        ):
            reads.append(event["requestURI"])
    assert reads, "the operator never listed or watched Deployments"
    selector = ["app.kubernetes.io/managed-by=resonance-operator"]
    query = [urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query) for uri in reads]
    assert all(q.get("labelSelector") == selector for q in query), reads[:3]
