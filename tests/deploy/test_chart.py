"""The Helm chart, the Dockerfile and the kind scripts: everything that can be checked without Docker."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from resonance_operator.grants import API_CALLS, CLUSTER_READS, LEASE_CALLS

from ..support.chart import ALL_ON, CHART, ROOT, helm, notes, render

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "values", [[], ALL_ON, [*ALL_ON, "--set", "operator.watchNamespaces={team-a,team-b}"]]
)
def test_helm_lint_strict(values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", ["1.30", "1.37"])
@pytest.mark.parametrize("values", [[], ALL_ON])
def test_rendered_chart_passes_strict_schemas(values: list[str], version: str) -> None:
    docs = render(*values)
    kinds = sorted(d["kind"] for d in docs)
    assert "Deployment" in kinds and "ClusterRole" in kinds
    for doc in docs:
        if doc["apiVersion"].startswith("resonance.io/"):
            continue  # our own kind: the API server validates it against the CRD (see the operator tests)
        kubernetes_validate.validate(doc, version, strict=True)


def test_values_schema_rejects_wrong_type_and_unknown_key() -> None:
    wrong = helm("template", "resonance", str(CHART), "--set", "operator.livenessPort=high", check=False)
    assert wrong.returncode != 0 and "livenessPort" in wrong.stderr and "integer" in wrong.stderr
    unknown = helm("template", "resonance", str(CHART), "--set", "operatr.logLevel=INFO", check=False)
    assert unknown.returncode != 0 and "Additional property operatr is not allowed" in unknown.stderr


def test_chart_crd_is_the_repository_crd() -> None:
    ours = (ROOT / "operator" / "resonance_operator" / "resonancenodes.yaml").read_text()
    assert (CHART / "crds" / "resonancenodes.yaml").read_text() == ours, "run `make crds`"
    assert (ROOT / "crds" / "resonancenodes.yaml").read_text() == ours, "run `make crds`"


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Every (API group, resource, verb) a list of RBAC rules grants."""
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


@pytest.mark.parametrize("values", [[], ["--set", "operator.watchNamespaces={team-a}"]])
def test_rbac_covers_every_api_call_and_no_more(values: list[str]) -> None:
    docs = render(*values)
    kind = "Role" if values else "ClusterRole"
    roles = [
        d
        for d in docs
        if d["kind"] == kind
        and not d["metadata"]["name"].endswith(("-crds", "-leader", "-node-author", "-node-viewer"))
    ]
    assert roles, f"no {kind}"
    for role in roles:
        granted = _grants(role["rules"])
        assert set(API_CALLS) - granted == set(), (
            f"{kind} {role['metadata']['name']} lacks calls the operator makes"
        )
        assert granted - set(API_CALLS) == set(), "grants more than the operator uses"
    if values:
        assert [r["metadata"]["namespace"] for r in roles] == ["team-a"]
    [lease_role] = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader")]
    assert lease_role["metadata"]["namespace"] == "resonance"  # its own namespace, nowhere else
    assert _grants(lease_role["rules"]) == set(LEASE_CALLS)
    reads = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-crds"))
    granted_reads = _grants(reads["rules"])
    namespace_reads = {c for c in CLUSTER_READS if c[1] == "namespaces"}
    assert granted_reads == (set(CLUSTER_READS) if values else set(CLUSTER_READS) - namespace_reads)


def test_operator_replicas_elect_a_leader_and_are_restricted() -> None:
    docs = render()
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["RESONANCE_LEADER_ELECTION"]["value"] == "true"
    assert env["RESONANCE_LEASE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    [pdb] = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert not [d for d in render("--set", "operator.replicas=1") if d["kind"] == "PodDisruptionBudget"]
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"] == ["resonance"] and container["args"] == ["operator"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "resonance",
        "app.kubernetes.io/instance": "resonance",
        "app.kubernetes.io/component": "operator",
    }
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RESONANCE_BRIDGE_IMAGE"] == "ghcr.io/resonance-io/resonance:0.1.0"
    devs = {d["kind"]: d for d in render(*ALL_ON) if "kafka" in d["metadata"]["name"]}
    dev_env = next(
        d
        for d in render(*ALL_ON)
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    )["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["name"]: e.get("value") for e in dev_env}["RESONANCE_KAFKA_BOOTSTRAP_SERVERS"] == (
        "resonance-kafka.resonance.svc:9092"
    )
    assert set(devs) == {"Service", "Deployment"}


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether an equality selector matches labels: all its pairs are among them (empty: matches all)."""
    return selector.items() <= labels.items()


def test_no_selector_matches_another_workloads_pods() -> None:
    docs = render(*ALL_ON)
    workloads: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            selector = doc["spec"]["selector"]
            assert set(selector) == {"matchLabels"}, "only matchLabels selectors are checked here"
            name = f"{doc['kind']}/{doc['metadata']['name']}"
            workloads[name] = (selector["matchLabels"], doc["spec"]["template"]["metadata"]["labels"])
    assert sorted(workloads) == [
        "Deployment/lexamoris-server",
        "Deployment/nexus-server",
        "Deployment/resonance-kafka",
        "Deployment/resonance-operator",
    ]
    overlaps = [
        (name, other)
        for name, (selector, _) in workloads.items()
        for other, (_, labels) in workloads.items()
        if other != name and _selects(selector, labels)
    ]
    assert overlaps == [], f"(selector of, also matches the pods of): {overlaps}"
    for name, (selector, labels) in workloads.items():
        assert _selects(selector, labels), f"{name} does not select its own pods"
        assert "app.kubernetes.io/component" in selector, f"{name} selects without its component"
    services = {d["metadata"]["name"]: d["spec"]["selector"] for d in docs if d["kind"] == "Service"}
    assert sorted(services) == ["lexamoris-server", "nexus-server", "resonance-kafka"]
    for service, selector in services.items():
        selected = [name for name, (_, labels) in workloads.items() if _selects(selector, labels)]
        assert len(selected) == 1, f"Service {service} selects the pods of {selected}"


def test_long_names_are_truncated() -> None:
    helm_release = "r" * 53  # the longest release name helm allows
    out = helm("template", helm_release, str(CHART), "--set", "nameOverride=" + "n" * 40, *ALL_ON).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert all(len(d["metadata"]["name"]) <= 63 for d in docs if d["kind"] != "ResonanceNode")


def test_dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run([str(BIN / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_entry_points_exist() -> None:
    scripts = {
        ep.name: ep.value for ep in distribution("resonance").entry_points if ep.group == "console_scripts"
    }
    assert scripts == {"resonance": "resonance_local.cli:main"}
    help_text = subprocess.run([str(BIN / "resonance"), "--help"], capture_output=True, text=True).stdout
    for command in ("operator", "bridge", "node"):
        assert command in help_text
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["resonance"]' in dockerfile


def test_kind_scripts_are_shellcheck_clean() -> None:
    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.sh"))
    assert len(scripts) == 3
    result = subprocess.run([str(BIN / "shellcheck"), *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_notes_give_a_path_that_ends_in_ready_nodes() -> None:
    """The demo's nodes come with the chart, in the release namespace; without it the user is told
    to point a node at their own endpoint, in a namespace the operator watches."""
    demo = notes(*ALL_ON)
    assert "kubectl wait --for=condition=Ready resonancenodes --all -n resonance" in demo
    own = notes()
    assert "kubectl apply -n resonance -f - <<'NODE'" in own and "ws://YOUR-NODE-HOST:8766" in own
    assert "kubectl get resonancenodes -n resonance" in own
    watched = notes("--set", "operator.watchNamespaces={team-a,team-b}")
    assert "kubectl apply -n team-a -f -" in watched


def test_notes_warn_that_the_default_image_exists_only_once_released() -> None:
    """With the default image nobody may have published yet: how to build and load one instead."""
    default = notes()
    assert default.startswith("WARNING: the image is the chart's default, ghcr.io/resonance-io/resonance:")
    assert "kind load docker-image resonance:dev" in default and "--set image.tag=dev" in default
    for own in (["--set", "image.tag=0.1.0"], ["--set", "image.repository=registry.example.com/r"]):
        assert "WARNING" not in notes(*own)


def test_bridge_pod_defaults_reach_the_operator_and_pull_secrets_fall_back() -> None:
    from resonance_operator.settings import load

    def template(*values: str) -> Any:
        [operator] = [d for d in render(*values) if d["kind"] == "Deployment"]
        env = {
            e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        return load(
            {"RESONANCE_BRIDGE_POD_TEMPLATE": env["RESONANCE_BRIDGE_POD_TEMPLATE"]}
        ).bridge_pod_template

    inherited = template("--set", "imagePullSecrets[0].name=regcred")
    assert inherited.spec.image_pull_secrets == [{"name": "regcred"}]
    own = template(
        "--set", "imagePullSecrets[0].name=regcred", "--set", "bridge.imagePullSecrets[0].name=bridges",
        "--set", "bridge.nodeSelector.pool=edge", "--set", "bridge.priorityClassName=low",
        "--set", "bridge.podLabels.team=relay", "--set", "bridge.podAnnotations.owner=ops",
    )  # fmt: skip
    assert own.spec.image_pull_secrets == [{"name": "bridges"}]
    assert (own.spec.node_selector, own.spec.priority_class_name) == ({"pool": "edge"}, "low")
    assert (own.metadata.labels, own.metadata.annotations) == ({"team": "relay"}, {"owner": "ops"})
    assert (
        helm(
            "lint",
            "--strict",
            str(CHART),
            "--set",
            "bridge.podLabels.app\\.kubernetes\\.io/name=x",
            check=False,
        ).returncode
        != 0
    )


NODES_VALUES = {
    "nodes": {
        "allowedLabels": ["example.com/*"],
        "allowedAnnotations": ["example.com/owner"],
        "allowedNodeSelectors": {"example.com/pool": ["edge", "gpu-*"]},
        "allowedTolerations": [{"key": "dedicated", "operator": "Exists"}],
        "allowedPriorityClasses": ["bridges-low"],
    },
    "bridge": {"tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]},
}


def test_what_nodes_may_set_reaches_the_operator_and_bad_values_are_refused(tmp_path: Path) -> None:
    """The chart's nodes.allowed* become the operator's allow-lists (podpolicy): empty by default, so
    a node adds nothing to its pod the administrator has not allowed; the schema refuses bad ones."""
    from resonance_operator import podpolicy
    from resonance_operator.model import NodeSpec
    from resonance_operator.settings import load

    def settings(*values: str) -> Any:
        [operator] = [d for d in render(*values) if d["kind"] == "Deployment"]
        env = operator["spec"]["template"]["spec"]["containers"][0]["env"]
        return load({e["name"]: e["value"] for e in env if "value" in e})

    template = {
        "metadata": {"labels": {"example.com/team": "relay"}, "annotations": {"example.com/owner": "ops"}},
        "spec": {
            "nodeSelector": {"example.com/pool": "gpu-a100"},
            "tolerations": [
                {"key": "dedicated", "value": "bridges", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Exists", "effect": "NoSchedule"},  # the chart's own
            ],
            "priorityClassName": "bridges-low",
        },
    }
    node = NodeSpec.model_validate(
        {"endpoint": "ws://n:1", "topic": "t", "anchor": "A", "template": template}
    )
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(NODES_VALUES))
    assert podpolicy.problems(node, settings("-f", str(values))) == []
    refused = podpolicy.problems(node, settings())
    assert [p.split(":")[0] for p in refused] == [
        "spec.template.metadata.labels",
        "spec.template.metadata.annotations",
        "spec.template.spec.nodeSelector",
        "spec.template.spec.tolerations[0]",
        "spec.template.spec.tolerations[1]",  # bridge.tolerations is not set here
        "spec.template.spec.priorityClassName",
    ]
    for bad, needle in (
        (
            ["--set-json", 'nodes.allowedTolerations=[{"operator":"Maybe"}]'],
            "nodes.allowedTolerations.0.operator",
        ),
        (["--set", "nodes.allowedPriorityClasses={system-node-critical}"], "nodes.allowedPriorityClasses.0"),
        (["--set", "nodes.allowedNodeSelectors.pool=edge"], "nodes.allowedNodeSelectors.pool"),
        (["--set", "nodes.allowedLabels={app=x}"], "nodes.allowedLabels.0"),
        (["--set", "nodes.allowedTolerationz={}"], "Additional property allowedTolerationz"),
    ):
        result = helm("template", "resonance", str(CHART), *bad, check=False)
        assert result.returncode != 0 and needle in result.stderr, (bad, result.stderr)


def test_dev_kafka_heap_fits_its_memory_limit() -> None:
    [kafka] = [
        d for d in render(*ALL_ON) if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("kafka")
    ]
    container = kafka["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KAFKA_HEAP_OPTS"] == "-Xms512m -Xmx512m"
    assert container["resources"]["limits"]["memory"] == "1024Mi"  # twice the heap


def test_release_workflow_publishes_what_the_chart_installs(tmp_path: Path) -> None:
    """On a tag, the image the chart names is built for amd64 and arm64 and pushed, and the packaged
    chart attached; the tag must match the package's and the chart's versions (checked here too)."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # YAML reads the key `on` as true
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert workflow["env"]["IMAGE"] == values["image"]["repository"]
    steps = workflow["jobs"]["image"]["steps"]
    [build] = [s for s in steps if str(s.get("uses", "")).startswith("docker/build-push-action")]
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64" and build["with"]["push"] is True
    assert "helm package charts/resonance" in str(workflow["jobs"]["chart"]["steps"])
    # The version check, run as the workflow runs it, for the tag of the current version.
    [check] = [s["run"] for s in steps if s.get("id") == "version"]
    script = tmp_path / "version.sh"
    script.write_text(check)
    assert subprocess.run([str(BIN / "shellcheck"), "-s", "bash", str(script)]).returncode == 0
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    run = subprocess.run(
        ["bash", "-e", str(script)],
        cwd=ROOT,
        env={
            "GITHUB_REF_NAME": f"v{version}",
            "GITHUB_OUTPUT": str(tmp_path / "out"),
            "PATH": "/usr/bin:/bin",
        },
    )
    assert run.returncode == 0 and (tmp_path / "out").read_text() == f"version={version}\n"


def test_pod_monitors_select_the_operator_and_every_bridge_and_the_dashboard_ships() -> None:
    from resonance_operator import builders
    from resonance_operator.model import Node
    from resonance_operator.settings import Settings

    docs = render("--set", "metrics.podMonitor.enabled=true", "--set", "dashboards.enabled=true")
    monitors = {d["metadata"]["name"].rsplit("-", 1)[1]: d for d in docs if d["kind"] == "PodMonitor"}
    [operator] = [d for d in docs if d["kind"] == "Deployment"]
    body = yaml.safe_load((ROOT / "examples" / "lexamoris-node.yaml").read_text())
    body["metadata"].update(namespace="resonance", uid="u")
    bridge = builders.deployment(Node.from_body(body), Settings())
    for monitor, pod in ((monitors["operator"], operator), (monitors["bridges"], bridge)):
        template = pod["spec"]["template"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
        assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
        annotations = template["metadata"]["annotations"]  # for Prometheus without its operator
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) in {
            p["containerPort"] for p in template["spec"]["containers"][0]["ports"]
        }
    [dashboard] = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["resonance.json"])["panels"]


def test_the_admission_policy_checks_every_secret_a_node_can_name() -> None:
    """Every *SecretRef and *SecretName of the CRD, walked from its schema: a field the policy missed
    would let a node's author hand a Secret they cannot read to their bridge or their Ingress."""
    crd = yaml.safe_load((ROOT / "crds" / "resonancenodes.yaml").read_text())

    def named(schema: dict[str, Any], path: str) -> list[str]:
        found = []
        for key, sub in (schema.get("properties") or {}).items():
            if key.endswith(("SecretRef", "SecretName")):
                found.append(f"{path}{key}")
            elif key not in ("template", "status"):  # pull secrets only pull the operator's image
                found += named(sub, f"{path}{key}.")
        return found

    fields = named(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"], "")
    assert "listen.tls.certSecretRef" in fields and "listen.ingress.tlsSecretName" in fields
    (policy,) = (d for d in render() if d["kind"] == "ValidatingAdmissionPolicy")
    said = [v["messageExpression"] for v in policy["spec"]["validations"]]
    assert sorted(m.split(":")[0].strip("'").removeprefix("spec.") for m in said) == sorted(fields)
    for field in fields:  # and each reads its own field, by the name it gives
        (expression,) = (
            v["expression"]
            for v in policy["spec"]["validations"]
            if f"spec.{field}:" in v["messageExpression"]
        )
        assert f"object.spec.?{field.replace('.', '.?')}" in expression, expression
