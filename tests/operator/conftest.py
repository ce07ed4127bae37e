"""An API server and the operator, once per test session (support/apiserver.py says which servers
serve; .ci/run uses kube-lite). Without one these tests skip, naming what to set, unless
RESONANCE_REQUIRE_KUBE=1 makes that a failure."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config
from resonance_local.embedded import EmbeddedBroker
from resonance_operator.storage import Kube

from ..support import apiserver
from ..support.kube import ROOT, Cluster, Operator

ADMISSION_KINDS = ("validatingadmissionpolicies", "validatingadmissionpolicybindings")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with apiserver.started(tmp_path_factory.mktemp("apiserver")) as server:
        if server is None:
            if os.environ.get("RESONANCE_REQUIRE_KUBE") == "1":
                pytest.fail(apiserver.HOW)
            pytest.skip(apiserver.HOW)
        cluster = Cluster(server.kubeconfig, server.audit_log, server.controllers)
        try:
            applied = cluster.kubectl("apply", "-f", str(ROOT / "crds" / "resonancenodes.yaml"))
            assert "Warning" not in applied.stderr, (
                f"the CRD is not what the API server reads: {applied.stderr}"
            )
            crds = ["crd/resonancenodes.resonance.io"]
            if not server.controllers:  # kube-lite: the chart's admission policy needs somewhere to go,
                # and a listening node's Ingress or HTTPRoute too
                for stand_ins in ("admissionregistration.yaml", "exposures-as-crds.yaml"):
                    cluster.kubectl("apply", "-f", str(ROOT / "tests" / "support" / stand_ins))
                crds += [f"crd/{k}.admissionregistration.k8s.io" for k in ADMISSION_KINDS]
                crds += ["crd/ingresses.networking.k8s.io", "crd/httproutes.gateway.networking.k8s.io"]
            cluster.kubectl("wait", "--for=condition=Established", *crds, "--timeout=60s")
            yield cluster
        finally:
            if server.controllers:  # someone's cluster: leave it as it was, but for the CRD
                for name in cluster.created:
                    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = Operator(cluster.kubeconfig, log, broker.bootstrap)
    process.start()
    yield process
    process.kill()


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[Kube]:
    """The operator's own API client, for tests that call its storage or service directly."""
    await config.load_kube_config(config_file=str(cluster.kubeconfig))
    kube = Kube(client.ApiClient(client.Configuration.get_default_copy()))
    yield kube
    await kube.close()


@pytest.fixture
def namespace(cluster: Cluster) -> str:
    return cluster.namespace(f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def examples() -> Path:
    return ROOT / "examples"
