"""Pure: every API call the operator makes, as the chart's RBAC must grant them (a test holds the
chart's Roles to these lists, another the calls in the API server's audit log)."""

from __future__ import annotations

from . import GROUP

# Every (API group, resource, verb) the operator uses: this module's calls, plus kopf's watching,
# its annotation bookkeeping (patch) and its Events. The chart's RBAC is tested against this list.
API_CALLS = frozenset(
    {
        (GROUP, "resonancenodes", "get"),
        (GROUP, "resonancenodes", "list"),
        (GROUP, "resonancenodes", "watch"),
        (GROUP, "resonancenodes", "patch"),
        (GROUP, "resonancenodes/status", "patch"),
        ("apps", "deployments", "get"),
        ("apps", "deployments", "list"),
        ("apps", "deployments", "watch"),
        ("apps", "deployments", "create"),  # an apply that creates is authorized as a create too
        ("apps", "deployments", "patch"),
        ("", "events", "create"),
        ("", "events", "patch"),  # a repeated Event's count
        ("", "serviceaccounts", "get"),
        ("", "serviceaccounts", "create"),
        ("", "services", "get"),  # a listening node's (spec.listen)
        ("", "services", "create"),
        ("", "services", "patch"),
        ("", "services", "delete"),
        ("", "configmaps", "get"),  # a node's replay request (replays.py)
        ("", "configmaps", "create"),
        ("", "configmaps", "patch"),
        ("", "configmaps", "delete"),
        ("networking.k8s.io", "ingresses", "get"),  # spec.listen.ingress
        ("networking.k8s.io", "ingresses", "create"),
        ("networking.k8s.io", "ingresses", "patch"),
        ("networking.k8s.io", "ingresses", "delete"),
        ("gateway.networking.k8s.io", "httproutes", "get"),  # spec.listen.httpRoute
        ("gateway.networking.k8s.io", "httproutes", "create"),
        ("gateway.networking.k8s.io", "httproutes", "patch"),
        ("gateway.networking.k8s.io", "httproutes", "delete"),
    }
)
# Leader election (leader.py): one Lease, in the operator's own namespace (a Role of its own there).
LEASE_CALLS = frozenset(
    {
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
    }
)
# Cluster-scoped reads of kopf's: it notices CRDs changing, and, when it watches a list of namespaces,
# namespaces coming and going. The chart grants these in a ClusterRole of their own.
CLUSTER_READS = frozenset(
    {
        ("apiextensions.k8s.io", "customresourcedefinitions", "get"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    }
)
