"""What a node's spec.template may add to its bridge pod: an allow-list, not a deny-list.

The operator's allow-lists (chart values nodes.allowed*, Settings.allowed_*) say which labels,
annotations, node selectors, tolerations and priority classes a node may set; empty allows none. The
operator's own defaults (chart values bridge.*, Settings.bridge_pod_template) are the administrator's:
a node repeating one is not checked, a node dropping a placement default is. Reserved keys are never
allowed. The CRD refuses those at once (resonancenodes.yaml); `reserved` checks them again, since an
older CRD may be installed (helm never upgrades one) and `resonance up` reads manifests no API server saw.

Pure: a spec and the settings in, one message per problem out, each naming the field and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any

from .model import NodeSpec, PodTemplate, Toleration
from .settings import Settings

# Domains whose keys (and their subdomains': app.kubernetes.io/, sidecar.istio.io/) Kubernetes, this
# operator, service meshes, CNIs and identity agents act on: AppArmor, seccomp, mesh injection and
# mTLS, extra networks, cloud roles, scraping. The CRD's rules hold the same pattern (a test compares).
RESERVED_DOMAINS = (
    "kubernetes.io", "k8s.io", "resonance.io", "prometheus.io", "istio.io", "linkerd.io", "kuma.io",
    "dapr.io", "hashicorp.com", "cni.cncf.io", "amazonaws.com", "azure.workload.identity",
)  # fmt: skip
RESERVED = re.compile(r"^([^/]*\.)?(" + "|".join(d.replace(".", r"\.") for d in RESERVED_DOMAINS) + ")/")
LABELS, ANNOTATIONS = "spec.template.metadata.labels", "spec.template.metadata.annotations"
SELECTOR, TOLERATIONS = "spec.template.spec.nodeSelector", "spec.template.spec.tolerations"
PRIORITY, AFFINITY = "spec.template.spec.priorityClassName", "spec.template.spec.affinity"


def reserved(spec: NodeSpec) -> list[str]:
    """What the CRD's rules refuse: reserved keys, unprefixed label keys, the system-* classes."""
    own = spec.template or PodTemplate()
    found = []
    for field, keys in ((LABELS, own.metadata.labels), (ANNOTATIONS, own.metadata.annotations)):
        found += [
            f"{field}: {key} is reserved (Kubernetes, this operator, service meshes, CNIs and identity "
            "agents act on it): the chart's bridge.* values may set it, a node may not"
            for key in keys
            if RESERVED.match(key)
        ]
    found += [
        f"{LABELS}: {key} has no prefix: use your own (e.g. example.com/{key}); plain keys such as app "
        "or tier are what other Services, NetworkPolicies and PodMonitors select"
        for key in own.metadata.labels
        if "/" not in key
    ]
    if (own.spec.priority_class_name or "").startswith("system-"):
        found.append(
            f"{PRIORITY}: the system-* classes are for the cluster's own critical pods, never a bridge; "
            "use one the operator allows (chart value nodes.allowedPriorityClasses)"
        )
    return found


def problems(spec: NodeSpec, settings: Settings) -> list[str]:
    """Everything in the node's spec.template that the operator does not allow; empty: build it."""
    own, default = spec.template or PodTemplate(), settings.bridge_pod_template
    found = reserved(spec)
    prefixed = {k: v for k, v in own.metadata.labels.items() if "/" in k}  # the others: reserved()
    found += _keys(LABELS, prefixed, default.metadata.labels, settings.allowed_labels, "nodes.allowedLabels")
    found += _keys(
        ANNOTATIONS,
        own.metadata.annotations,
        default.metadata.annotations,
        settings.allowed_annotations,
        "nodes.allowedAnnotations",
    )
    pairs = (*settings.allowed_node_selectors, *(default.spec.node_selector or {}).items())
    if own.spec.node_selector is not None:
        found += _selector(own.spec.node_selector, default.spec.node_selector or {}, pairs)
    if own.spec.affinity is not None:
        found += _affinity(own.spec.affinity, default.spec.affinity or {}, pairs)
    found += _tolerations(own.spec.tolerations or [], [*settings.allowed_tolerations, *_parsed(default)])
    name = own.spec.priority_class_name
    # Unset or "" is the cluster's default priority, which every pod may have; system-* is reserved.
    allowed = {*settings.allowed_priority_classes, default.spec.priority_class_name}
    if name and name not in allowed and not name.startswith("system-"):
        found.append(
            f"{PRIORITY}: {name} is not allowed here; allowed: {_list(settings.allowed_priority_classes)} "
            "(chart value nodes.allowedPriorityClasses)"
        )
    return found


def _list(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


def _keys(
    field: str,
    own: Mapping[str, str],
    default: Mapping[str, str],
    patterns: tuple[str, ...],
    chart_value: str,
) -> list[str]:
    """Keys a node adds (or whose default it changes), each matching an allowed pattern."""
    return [
        f"{field}: {key} is not allowed here; allowed: {_list(patterns)} (chart value {chart_value})"
        for key, v in own.items()
        if default.get(key) != v
        and not RESERVED.match(key)  # said by reserved()
        and not any(fnmatchcase(key, p) for p in patterns)
    ]


def _pair_allowed(key: str, value: str, pairs: Iterable[tuple[str, str]]) -> bool:
    return any(key == k and fnmatchcase(value, pattern) for k, pattern in pairs)


def _allowed_pairs(pairs: Iterable[tuple[str, str]]) -> str:
    return _list(f"{k}={v}" for k, v in pairs)


def _selector(
    own: Mapping[str, str], default: Mapping[str, str], pairs: tuple[tuple[str, str], ...]
) -> list[str]:
    found = [
        f"{SELECTOR}: {key}={value} is not allowed here; allowed: {_allowed_pairs(pairs)} "
        "(chart value nodes.allowedNodeSelectors)"
        for key, value in own.items()
        if not _pair_allowed(key, value, pairs)
    ]
    # A node's nodeSelector replaces the default: dropping a key of it would leave the pool it pins.
    found += [
        f"{SELECTOR}: replaces the operator's default and drops {key}={value} (chart value "
        f"bridge.nodeSelector): keep {key}, with an allowed value"
        for key, value in default.items()
        if key not in own
    ]
    return found


REQUIRED, PREFERRED = (
    "requiredDuringSchedulingIgnoredDuringExecution",
    "preferredDuringSchedulingIgnoredDuringExecution",
)


def _requirements(node_affinity: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every node selector requirement of a nodeAffinity, with its path."""
    terms = [
        (f"{REQUIRED}.nodeSelectorTerms[{i}]", term)
        for i, term in enumerate((node_affinity.get(REQUIRED) or {}).get("nodeSelectorTerms") or [])
    ]
    terms += [
        (f"{PREFERRED}[{i}].preference", preferred.get("preference") or {})
        for i, preferred in enumerate(node_affinity.get(PREFERRED) or [])
    ]
    for where, term in terms:
        for kind in ("matchExpressions", "matchFields"):
            for j, requirement in enumerate(term.get(kind) or []):
                yield f"{where}.{kind}[{j}]", requirement


def _affinity(
    own: Mapping[str, Any], default: Mapping[str, Any], pairs: tuple[tuple[str, str], ...]
) -> list[str]:
    """nodeAffinity places a pod as a nodeSelector does: the same allow-list, as `key In [values]`.
    podAffinity and podAntiAffinity place it among other pods, on nodes it may use anyway: allowed."""
    nodes, default_nodes = own.get("nodeAffinity"), default.get("nodeAffinity")
    if nodes is None:
        return (
            [
                f"{AFFINITY}: replaces the operator's default and drops its nodeAffinity (chart value "
                "bridge.affinity): repeat it in the node's affinity"
            ]
            if default_nodes
            else []
        )
    if nodes == default_nodes:
        return []
    found = []
    for where, requirement in _requirements(nodes):
        key, values = requirement.get("key", ""), requirement.get("values") or []
        if requirement.get("operator") != "In" or not all(_pair_allowed(key, v, pairs) for v in values):
            found.append(
                f"{AFFINITY}.nodeAffinity.{where}: {key} {requirement.get('operator')} {values} is not "
                f"allowed here; use In with allowed values: {_allowed_pairs(pairs)} "
                "(chart value nodes.allowedNodeSelectors)"
            )
    return found


def _parsed(default: PodTemplate) -> list[Toleration]:
    return [Toleration.model_validate(t) for t in default.spec.tolerations or []]


def covers(allowed: Toleration, wanted: Toleration) -> bool:
    """Whether `allowed` tolerates every taint `wanted` does (and for at least as long)."""
    if allowed.effect and allowed.effect != wanted.effect:
        return False
    if allowed.key and allowed.key != wanted.key:  # no key (operator Exists): every key
        return False
    if allowed.operator == "Equal" and (wanted.operator == "Exists" or wanted.value != allowed.value):
        return False
    limit, seconds = allowed.toleration_seconds, wanted.toleration_seconds
    # tolerationSeconds bounds NoExecute only; unset is for ever.
    return (
        limit is None or wanted.effect not in ("", "NoExecute") or (seconds is not None and seconds <= limit)
    )


def _tolerations(own: list[dict[str, Any]], allowed: list[Toleration]) -> list[str]:
    shown = [json.dumps(t.model_dump(by_alias=True, exclude_defaults=True)) for t in allowed]
    which = f"one of {', '.join(shown)}, or one narrower" if shown else "none"
    return [
        f"{TOLERATIONS}[{i}]: {json.dumps(raw)} is not allowed here; allowed: {which} "
        "(chart value nodes.allowedTolerations)"
        for i, raw in enumerate(own)
        if not any(covers(a, Toleration.model_validate(raw)) for a in allowed)
    ]
