"""kube-lite and the operator, once per test session. RESONANCE_KUBE_LITE names the kube-lite script
(.ci/run sets it); without it these tests skip, unless RESONANCE_REQUIRE_KUBE=1 makes that a failure."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support.kube import ROOT, Cluster, Operator


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    script = os.environ.get("RESONANCE_KUBE_LITE")
    if not script:
        reason = "RESONANCE_KUBE_LITE is not set: point it at a kube-lite script to run the operator tests"
        if os.environ.get("RESONANCE_REQUIRE_KUBE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    run = tmp_path_factory.mktemp("kube-lite")
    # An audit log of every request: the RBAC test checks what the operator really called.
    (run / "audit-policy.yaml").write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata}]\n"
    )
    audit = f"--audit-log-path={run / 'audit.log'} --audit-policy-file={run / 'audit-policy.yaml'}"
    env = {**os.environ, "KUBE_LITE_APISERVER_ARGS": audit}
    subprocess.run([script, "up", str(run)], check=True, capture_output=True, timeout=120, env=env)
    cluster = Cluster(run / "kubeconfig")
    try:
        cluster.kubectl("apply", "-f", str(ROOT / "crds" / "resonancenodes.yaml"))
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/resonancenodes.resonance.io", "--timeout=60s"
        )
        yield cluster
    finally:
        subprocess.run([script, "down", str(run)], check=False, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    process = Operator(cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    yield process
    process.kill()


@pytest.fixture
def namespace(cluster: Cluster) -> str:
    return cluster.namespace(f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def examples() -> Path:
    return ROOT / "examples"
