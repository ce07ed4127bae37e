"""What a node's spec.template may add to its bridge pod (podpolicy): each allow-list admits what it
lists and nothing else, an empty one admits nothing, the operator's own defaults are never checked, and
reserved keys are refused whatever an allow-list says."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from resonance_bridge.config import ConfigError
from resonance_operator import podpolicy
from resonance_operator.model import CRD, NodeSpec, PodTemplate, Toleration
from resonance_operator.settings import Settings, load

NOTHING = Settings()  # the defaults: every allow-list empty
UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
DEDICATED = {"key": "dedicated", "operator": "Equal", "value": "bridges", "effect": "NoSchedule"}


def spec(**template: Any) -> NodeSpec:
    return NodeSpec.model_validate(
        {"endpoint": "ws://n:1", "topic": "t", "anchor": "A", "template": template}
    )


def allowing(defaults: dict[str, Any] | None = None, /, **allowed: Any) -> Settings:
    return dataclasses.replace(
        NOTHING, bridge_pod_template=PodTemplate.model_validate(defaults or {}), **allowed
    )


def test_the_issues_examples_are_refused_naming_each_field() -> None:
    """Issue 19: what spec.template passed through to the bridge pod, refused with the defaults."""
    node = spec(
        metadata={
            "labels": {"app": "payments"},
            "annotations": {
                "container.apparmor.security.beta.kubernetes.io/bridge": "unconfined",
                "sidecar.istio.io/inject": "false",
            },
        },
        spec={"tolerations": [{"operator": "Exists"}], "priorityClassName": "system-node-critical"},
    )
    found = podpolicy.problems(node, NOTHING)
    assert found == [
        "spec.template.metadata.annotations: container.apparmor.security.beta.kubernetes.io/bridge is "
        "reserved (Kubernetes, this operator, service meshes, CNIs and identity agents act on it): the "
        "chart's bridge.* values may set it, a node may not",
        "spec.template.metadata.annotations: sidecar.istio.io/inject is reserved (Kubernetes, this "
        "operator, service meshes, CNIs and identity agents act on it): the chart's bridge.* values may "
        "set it, a node may not",
        "spec.template.metadata.labels: app has no prefix: use your own (e.g. example.com/app); plain keys "
        "such as app or tier are what other Services, NetworkPolicies and PodMonitors select",
        "spec.template.spec.priorityClassName: the system-* classes are for the cluster's own critical "
        "pods, never a bridge; use one the operator allows (chart value nodes.allowedPriorityClasses)",
        'spec.template.spec.tolerations[0]: {"operator": "Exists"} is not allowed here; allowed: none '
        "(chart value nodes.allowedTolerations)",
    ]
    # Reserved stays reserved, whatever the allow-lists say.
    everything = allowing(
        allowed_labels=("*",),
        allowed_annotations=("*",),
        allowed_priority_classes=("system-node-critical",),
        allowed_tolerations=(Toleration(operator="Exists"),),
    )
    assert [p.split(":")[0] for p in podpolicy.problems(node, everything)] == [
        "spec.template.metadata.annotations",
        "spec.template.metadata.annotations",
        "spec.template.metadata.labels",
        "spec.template.spec.priorityClassName",
    ]


def test_no_template_and_pull_secrets_need_no_allowing() -> None:
    assert podpolicy.problems(spec(), NOTHING) == []
    no_template = NodeSpec.model_validate({"endpoint": "ws://n:1", "topic": "t", "anchor": "A"})
    assert podpolicy.problems(no_template, NOTHING) == []
    assert podpolicy.problems(spec(spec={"imagePullSecrets": [{"name": "regcred"}]}), NOTHING) == []


@pytest.mark.parametrize(
    ("where", "setting", "value"),
    [("labels", "allowed_labels", "Labels"), ("annotations", "allowed_annotations", "Annotations")],
)
def test_label_and_annotation_keys_need_an_allowed_pattern(where: str, setting: str, value: str) -> None:
    node = spec(metadata={where: {"example.com/team": "relay", "cost.example.org/centre": "7"}})
    field, none = f"spec.template.metadata.{where}", f"allowed: none (chart value nodes.allowed{value})"
    assert podpolicy.problems(node, NOTHING) == [
        f"{field}: example.com/team is not allowed here; {none}",
        f"{field}: cost.example.org/centre is not allowed here; {none}",
    ]
    assert podpolicy.problems(node, allowing(**{setting: ("example.com/*", "*.example.org/centre")})) == []
    assert podpolicy.problems(node, allowing(**{setting: ("example.com/*",)})) == [
        f"{field}: cost.example.org/centre is not allowed here; allowed: example.com/* "
        f"(chart value nodes.allowed{value})"
    ]
    # The chart's defaults are the administrator's: repeating one is no addition, changing one is.
    defaults = {"metadata": {where: {"example.com/team": "relay", "cost.example.org/centre": "7"}}}
    assert podpolicy.problems(node, allowing(defaults)) == []
    changed = spec(metadata={where: {"example.com/team": "payments"}})
    assert [p.split(" is ")[0] for p in podpolicy.problems(changed, allowing(defaults))] == [
        f"{field}: example.com/team"
    ]


def test_node_selectors_need_an_allowed_key_and_value_and_keep_the_defaults_pool() -> None:
    field, none = "spec.template.spec.nodeSelector", "allowed: none (chart value nodes.allowedNodeSelectors)"
    edge = spec(spec={"nodeSelector": {"example.com/pool": "edge", "kubernetes.io/arch": "arm64"}})
    assert podpolicy.problems(edge, NOTHING) == [
        f"{field}: example.com/pool=edge is not allowed here; {none}",
        f"{field}: kubernetes.io/arch=arm64 is not allowed here; {none}",
    ]
    pools = (("example.com/pool", "edge"), ("example.com/pool", "gpu-*"), ("kubernetes.io/arch", "*"))
    assert podpolicy.problems(edge, allowing(allowed_node_selectors=pools)) == []
    gpu = spec(spec={"nodeSelector": {"example.com/pool": "gpu-a100"}})
    assert podpolicy.problems(gpu, allowing(allowed_node_selectors=pools)) == []
    payments = spec(spec={"nodeSelector": {"example.com/pool": "payments"}})
    assert podpolicy.problems(payments, allowing(allowed_node_selectors=pools)) == [
        f"{field}: example.com/pool=payments is not allowed here; allowed: example.com/pool=edge, "
        "example.com/pool=gpu-*, kubernetes.io/arch=* (chart value nodes.allowedNodeSelectors)"
    ]
    # A node's nodeSelector replaces the default one: it may repeat it, and must not drop its keys.
    defaults = {"spec": {"nodeSelector": {"example.com/pool": "edge"}}}
    assert (
        podpolicy.problems(spec(spec={"nodeSelector": {"example.com/pool": "edge"}}), allowing(defaults))
        == []
    )
    for dropped in ({}, {"kubernetes.io/arch": "arm64"}):
        found = podpolicy.problems(
            spec(spec={"nodeSelector": dropped}), allowing(defaults, allowed_node_selectors=pools)
        )
        assert found == [
            f"{field}: replaces the operator's default and drops example.com/pool=edge (chart value "
            "bridge.nodeSelector): keep example.com/pool, with an allowed value"
        ]
    assert podpolicy.problems(spec(), allowing(defaults)) == []  # no nodeSelector: the default's


def test_node_affinity_is_a_node_selector_and_pod_affinity_is_free() -> None:
    def required(*expressions: dict[str, Any]) -> dict[str, Any]:
        term = {"nodeSelectorTerms": [{"matchExpressions": list(expressions)}]}
        return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term}}

    pools = allowing(allowed_node_selectors=(("example.com/pool", "edge"), ("example.com/pool", "core")))
    inside = required({"key": "example.com/pool", "operator": "In", "values": ["edge", "core"]})
    assert podpolicy.problems(spec(spec={"affinity": inside}), pools) == []
    for outside in (
        {"key": "example.com/pool", "operator": "In", "values": ["edge", "payments"]},
        {"key": "example.com/pool", "operator": "NotIn", "values": ["edge"]},  # anywhere else
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1"]},
    ):
        [found] = podpolicy.problems(spec(spec={"affinity": required(outside)}), pools)
        assert found.startswith(
            "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0]: "
        ), found
        assert found.endswith("(chart value nodes.allowedNodeSelectors)")
    preferred = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "preference": {
                        "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]
                    },
                }
            ]
        }
    }
    [found] = podpolicy.problems(spec(spec={"affinity": preferred}), pools)
    assert "preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchFields[0]" in found
    spread = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
            ]
        }
    }
    assert podpolicy.problems(spec(spec={"affinity": spread}), NOTHING) == []
    # The default's nodeAffinity may be repeated; an affinity without it drops it.
    defaults = allowing({"spec": {"affinity": inside}})
    assert podpolicy.problems(spec(spec={"affinity": inside}), defaults) == []
    assert podpolicy.problems(spec(spec={"affinity": spread}), defaults) == [
        "spec.template.spec.affinity: replaces the operator's default and drops its nodeAffinity (chart "
        "value bridge.affinity): repeat it in the node's affinity"
    ]


@pytest.mark.parametrize(
    ("allowed", "wanted", "covered"),
    [
        (DEDICATED, DEDICATED, True),
        (DEDICATED, {**DEDICATED, "operator": None}, True),  # Equal is the default operator
        ({"key": "dedicated", "operator": "Exists"}, DEDICATED, True),  # any value, any effect
        ({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}, DEDICATED, True),
        (DEDICATED, {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}, False),  # any value
        (DEDICATED, {**DEDICATED, "value": "payments"}, False),
        (DEDICATED, {**DEDICATED, "effect": None}, False),  # every effect
        (DEDICATED, {**DEDICATED, "key": "other"}, False),
        (DEDICATED, {"operator": "Exists"}, False),  # every taint
        ({"key": "dedicated", "operator": "Exists"}, {"operator": "Exists"}, False),
        ({"operator": "Exists"}, {"operator": "Exists"}, True),
        (
            {**UNREACHABLE, "tolerationSeconds": 300},
            {**UNREACHABLE, "tolerationSeconds": 60},
            True,
        ),
        (
            {**UNREACHABLE, "tolerationSeconds": 300},
            UNREACHABLE,  # for ever
            False,
        ),
    ],
)
def test_a_toleration_is_allowed_when_an_allowed_one_covers_it(
    allowed: dict[str, Any], wanted: dict[str, Any], covered: bool
) -> None:
    wanted = {k: v for k, v in wanted.items() if v is not None}
    assert podpolicy.covers(Toleration.model_validate(allowed), Toleration.model_validate(wanted)) is covered
    settings = allowing(allowed_tolerations=(Toleration.model_validate(allowed),))
    found = podpolicy.problems(spec(spec={"tolerations": [wanted]}), settings)
    assert found == ([] if covered else [
        f"spec.template.spec.tolerations[0]: {json.dumps(wanted)} is not allowed here; allowed: one of "
        f"{json.dumps(Toleration.model_validate(allowed).model_dump(by_alias=True, exclude_defaults=True))}, "
        "or one narrower (chart value nodes.allowedTolerations)"
    ])  # fmt: skip


def test_tolerations_the_chart_sets_are_allowed_and_nothing_else_by_default() -> None:
    node = spec(spec={"tolerations": [DEDICATED]})
    assert podpolicy.problems(node, allowing({"spec": {"tolerations": [DEDICATED]}})) == []
    assert podpolicy.problems(node, NOTHING) == [
        f"spec.template.spec.tolerations[0]: {json.dumps(DEDICATED)} is not allowed here; allowed: none "
        "(chart value nodes.allowedTolerations)"
    ]


def test_priority_classes_need_allowing_but_the_default_and_none_do_not() -> None:
    low = spec(spec={"priorityClassName": "bridges-low"})
    assert podpolicy.problems(low, NOTHING) == [
        "spec.template.spec.priorityClassName: bridges-low is not allowed here; allowed: none "
        "(chart value nodes.allowedPriorityClasses)"
    ]
    assert podpolicy.problems(low, allowing(allowed_priority_classes=("bridges-low", "bridges"))) == []
    assert podpolicy.problems(low, allowing({"spec": {"priorityClassName": "bridges-low"}})) == []
    high = spec(spec={"priorityClassName": "payments-high"})
    assert podpolicy.problems(high, allowing(allowed_priority_classes=("bridges-low", "bridges"))) == [
        "spec.template.spec.priorityClassName: payments-high is not allowed here; allowed: bridges-low, "
        "bridges (chart value nodes.allowedPriorityClasses)"
    ]
    # "": the cluster's default priority, which any pod in the namespace gets without asking.
    assert podpolicy.problems(spec(spec={"priorityClassName": ""}), NOTHING) == []


def test_the_crd_refuses_the_same_reserved_keys() -> None:
    """One list: the CRD's rules (the API server's answer) and podpolicy (the operator's, for an older
    CRD and for `resonance up`) refuse the same keys."""
    template = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "template"
    ]["properties"]["metadata"]["properties"]
    for field in ("labels", "annotations"):
        rules = [r["rule"] for r in template[field]["x-kubernetes-validations"]]
        assert f'!self.exists(k, k.matches(r"{podpolicy.RESERVED.pattern}"))' in rules, field
    for domain in podpolicy.RESERVED_DOMAINS:
        assert podpolicy.RESERVED.match(f"{domain}/x") and podpolicy.RESERVED.match(f"sub.{domain}/x")
        assert not podpolicy.RESERVED.match(f"not{domain}/x") and not podpolicy.RESERVED.match(f"x/{domain}")


def test_allow_lists_from_the_environment() -> None:
    settings = load(
        {
            "RESONANCE_ALLOWED_LABELS": "example.com/*, team.example.com/name",
            "RESONANCE_ALLOWED_ANNOTATIONS": "example.com/owner",
            "RESONANCE_ALLOWED_NODE_SELECTORS": json.dumps({"example.com/pool": ["edge", "gpu-*"]}),
            "RESONANCE_ALLOWED_TOLERATIONS": json.dumps([DEDICATED]),
            "RESONANCE_ALLOWED_PRIORITY_CLASSES": "bridges-low,bridges",
        }
    )
    assert settings.allowed_labels == ("example.com/*", "team.example.com/name")
    assert settings.allowed_annotations == ("example.com/owner",)
    assert settings.allowed_node_selectors == (("example.com/pool", "edge"), ("example.com/pool", "gpu-*"))
    assert settings.allowed_tolerations == (Toleration.model_validate(DEDICATED),)
    assert settings.allowed_priority_classes == ("bridges-low", "bridges")
    for variable, bad in (
        ("RESONANCE_ALLOWED_NODE_SELECTORS", '{"example.com/pool": "edge"}'),  # a list of values
        ("RESONANCE_ALLOWED_TOLERATIONS", '[{"operator": "Maybe"}]'),
    ):
        with pytest.raises(ConfigError) as error:
            load({variable: bad})
        assert [p.variable for p in error.value.problems] == [variable]


def test_the_readme_says_what_a_node_may_set() -> None:
    """The README's "What a node may set" names every allow-list podpolicy reads (each a chart value),
    every spec.template field the CRD has, and every reserved domain."""
    import inspect
    import re

    import yaml

    from ..support.kube import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### What a node may set") :].split("\n## ", 1)[0]
    values = yaml.safe_load((ROOT / "charts" / "resonance" / "values.yaml").read_text())
    named = set(re.findall(r"nodes\.(allowed\w+)", inspect.getsource(podpolicy)))
    assert len(named) == 5
    for name in named:
        assert name in values["nodes"] and f"`nodes.{name}`" in section, name
    crd = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for part in ("metadata", "spec"):
        for field in crd["template"]["properties"][part]["properties"]:
            assert f"| `{part}.{field}` |" in section, field
    for domain in podpolicy.RESERVED_DOMAINS:
        assert f"`{domain}/`" in section, domain
