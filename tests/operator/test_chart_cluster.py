"""The rendered chart on a real API server, and the operator started exactly as its Deployment says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from resonance_local.embedded import free_port

from ..support.chart import render
from ..support.kube import ROOT, Cluster
from ..support.poll import until


async def test_rendered_chart_applies_and_its_operator_reconciles(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    if cluster.controllers:
        pytest.skip("applies the whole chart, whose operator a real cluster would run: kube-lite or envtest")
    docs = render(
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
        "--set",
        f"operator.livenessPort={free_port()}",
        namespace=namespace,
    )
    for doc in docs:
        result = cluster.apply(doc, check=False)
        assert result.returncode == 0, f"{doc['kind']} {doc['metadata']['name']}: {result.stderr}"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert cluster.get("deployment", deployment["metadata"]["name"], namespace) is not None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = [str(Path(sys.executable).parent / container["command"][0]), *container["args"]]
    downward = {"metadata.namespace": namespace, "metadata.name": "chart-operator-0"}
    env = {
        **os.environ,
        **{
            e["name"]: e["value"] if "value" in e else downward[e["valueFrom"]["fieldRef"]["fieldPath"]]
            for e in container["env"]
        },
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    log = tmp_path / "chart-operator.log"
    with open(log, "wb") as out:
        operator = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        example = yaml.safe_load((ROOT / "examples" / "lexamoris-node.yaml").read_text())
        example["metadata"]["namespace"] = namespace
        cluster.apply(example)
        await until(
            lambda: cluster.get("deployment", "resonance-bridge-lexamoris", namespace), 60, "the bridge"
        )
        await until(
            lambda: "resonance-bridge-lexamoris" in log.read_text(), 60, "the chart's operator to act"
        )
        assert f"namespaces {namespace}" in log.read_text()  # it watches what the chart told it to
        lease = (
            cluster.get("lease", deployment["metadata"]["name"].removesuffix("-operator"), namespace) or {}
        )
        assert lease["spec"]["holderIdentity"].startswith(
            "chart-operator-0_"
        )  # it leads, by the chart's Role
    finally:
        operator.kill()
        operator.wait()
