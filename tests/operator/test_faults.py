"""The operator under the faults a cluster brings: killed mid-way through 100 nodes, its API server
restarted under it, a burst of edits to one node. Each converges, with exact counts."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from resonance_local.embedded import EmbeddedBroker
from resonance_operator import builders
from resonance_operator.model import Node
from resonance_operator.settings import Settings

from ..support.kube import ROOT, Cluster, Operator, node
from ..support.poll import until
from ..support.proxy import Proxy
from ..support.soak import Tally

T = TypeVar("T")


def own_operator(cluster: Cluster, broker: EmbeddedBroker, log: Path, namespace: str) -> Operator:
    """An operator of the test's own, on the test's namespace only."""
    process = Operator(cluster.kubeconfig, log, broker.bootstrap)
    process.env["RESONANCE_WATCH_NAMESPACES"] = namespace
    return process


def converged(cluster: Cluster, namespace: str, count: int) -> bool:
    nodes = cluster.items("rn", namespace)
    deployments = {d["metadata"]["name"] for d in cluster.items("deployments", namespace)}
    return len(nodes) == count and all(
        (n.get("status") or {}).get("observedGeneration") == n["metadata"]["generation"]
        and (n.get("status") or {}).get("deployment") == builders.deployment_name(n["metadata"]["name"])
        and builders.deployment_name(n["metadata"]["name"]) in deployments
        for n in nodes
    )


async def test_killed_mid_way_through_100_nodes_it_converges_without_an_event_storm(
    cluster: Cluster, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    namespace = cluster.namespace(f"f-{uuid.uuid4().hex[:8]}")
    operator = own_operator(cluster, broker, tmp_path / "operator.log", namespace)
    nodes = [node(namespace, f"node-{i:03d}", topic=f"resonance.node-{i:03d}") for i in range(100)]
    cluster.apply(yaml.safe_dump_all(nodes))  # all there at its start: it takes them all at once
    operator.start()
    try:
        await until(lambda: cluster.items("deployments", namespace), 120, "the first Deployments")
        operator.kill()  # SIGKILL, mid-way
        made = len(cluster.items("deployments", namespace))
        print(f"killed after {made} of 100 Deployments")
        operator.start()  # a new process: it waits for the old lease to expire, then resumes
        restarted = time.monotonic()
        await until(lambda: converged(cluster, namespace, 100), 240, "all 100 nodes to converge")
        took = time.monotonic() - restarted
    finally:
        operator.kill()
    deployments = cluster.items("deployments", namespace)
    assert len(deployments) == 100 and len({d["metadata"]["uid"] for d in deployments}) == 100
    per_node = collections.Counter(e["involvedObject"]["name"] for e in cluster.items("events", namespace))
    # Created once each (a few that were mid-way may say so twice), and nothing else: no storm.
    assert sum(per_node.values()) <= 100 + made, per_node.most_common(3)
    assert max(per_node.values()) <= 2, per_node.most_common(3)
    Tally(
        "operator SIGKILLed mid-way", "nodes", 100, 100, 0, 0, took,
        f"killed after {made} Deployments; {sum(per_node.values())} Events; includes the 15 s lease expiry",
    ).publish()  # fmt: skip


async def test_a_burst_of_20_edits_ends_at_the_last_spec(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    cluster.apply(node(namespace))
    await until(lambda: cluster.get("deployment", "resonance-bridge-lexamoris", namespace), 30, "the bridge")
    for i in range(1, 21):
        cluster.kubectl(
            "patch",
            "rn",
            "lexamoris",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            f'{{"spec":{{"maxInFlight":{i}}}}}',
        )
    body = cluster.get("rn", "lexamoris", namespace) or {}
    settings = Settings(
        bridge_image="resonance:test",
        kafka_bootstrap_servers=broker_of(operator),
        kafka_enable_idempotence=False,
    )
    wanted = builders.deployment(Node.from_body(body), settings)["metadata"]["annotations"][
        builders.HASH_ANNOTATION
    ]

    def hash_now() -> str:
        deployment = cluster.get("deployment", "resonance-bridge-lexamoris", namespace) or {}
        return str(deployment["metadata"]["annotations"][builders.HASH_ANNOTATION])

    await until(
        lambda: hash_now() == wanted, 60, lambda: f"the last spec's config hash ({hash_now()} != {wanted})"
    )
    deployment = cluster.get("deployment", "resonance-bridge-lexamoris", namespace) or {}
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RESONANCE_MAX_IN_FLIGHT"] == "20"
    await until(
        lambda: (
            ((cluster.get("rn", "lexamoris", namespace) or {}).get("status") or {}).get("observedGeneration")
            == body["metadata"]["generation"]
        ),
        30,
        "observedGeneration to catch up",
    )
    assert "Traceback" not in operator.output()
    Tally(
        "20 edits in a burst", "edits", 20, 20, 0, 0, None, "the Deployment ends at the last spec"
    ).publish()


def broker_of(operator: Operator) -> str:
    return operator.env["RESONANCE_KAFKA_BOOTSTRAP_SERVERS"]


class ThreadedProxy:
    """A Proxy on a loop of its own, so that blocking kubectl calls in the test cannot starve it."""

    def __init__(self, target_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.proxy = self.call(self._make(target_port))

    async def _make(self, target_port: int) -> Proxy:
        proxy = Proxy(target_port)
        await proxy.start()
        return proxy

    def call(self, step: Coroutine[None, None, T]) -> T:
        return asyncio.run_coroutine_threadsafe(step, self.loop).result(30)

    def retarget(self, target_port: int) -> None:
        self.proxy.target_port = target_port
        self.call(self.proxy.start())

    def close(self) -> None:
        self.call(self.proxy.cut())
        self.loop.call_soon_threadsafe(self.loop.stop)


def wait(probe: Callable[[], object], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, what()
        time.sleep(0.5)


def test_an_api_server_restart_is_survived(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """kube-lite down and up on the same data, behind a fixed address: the watches recover and a node
    created after the restart is reconciled. Down for longer than the lease's renew deadline, the
    leader exits (as client-go's does) and its restart, as the kubelet's, resumes."""
    script = os.environ.get("RESONANCE_KUBE_LITE")
    if not script:
        pytest.skip("restarts its own API server: kube-lite (RESONANCE_KUBE_LITE)")
    run = tmp_path / "kube"

    def kube_lite(command: str) -> None:
        subprocess.run([script, command, str(run)], check=True, capture_output=True, timeout=120)

    def port() -> int:
        server = yaml.safe_load((run / "kubeconfig").read_text())["clusters"][0]["cluster"]["server"]
        return int(server.rsplit(":", 1)[1])

    kube_lite("up")
    proxy = ThreadedProxy(port())
    try:
        config = yaml.safe_load((run / "kubeconfig").read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.proxy.port}"
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
        cluster = Cluster(tmp_path / "kubeconfig")
        cluster.kubectl("apply", "-f", str(ROOT / "crds" / "resonancenodes.yaml"))
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/resonancenodes.resonance.io", "--timeout=60s"
        )
        namespace = cluster.namespace(f"f-{uuid.uuid4().hex[:8]}")
        operator = own_operator(cluster, broker, tmp_path / "operator.log", namespace)
        operator.start()
        try:
            cluster.apply(node(namespace, "before"))
            wait(lambda: cluster.get("deployment", "resonance-bridge-before", namespace), 60, operator.output)
            proxy.call(proxy.proxy.cut())
            kube_lite("down")
            kube_lite("up")  # the same etcd data; a new port, which the proxy now forwards to
            proxy.retarget(port())
            back = time.monotonic()
            cluster.apply(node(namespace, "after"))
            restarts = 0
            while not cluster.get("deployment", "resonance-bridge-after", namespace):
                assert time.monotonic() - back < 120, operator.output()[-3000:]
                if operator.process is not None and operator.process.poll() is not None:
                    restarts += 1  # it lost its lease: restarted, as the kubelet would
                    operator.start()
                time.sleep(0.5)
            took = time.monotonic() - back
            deployments = len(cluster.items("deployments", namespace))
            note = f"a node created after it reconciled; {restarts} operator restarts (lease lost)"
            Tally("API server restart", "nodes", 2, deployments, 2 - deployments, 0, took, note).publish()
            assert deployments == 2
        finally:
            operator.kill()
    finally:
        proxy.close()
        subprocess.run([script, "down", str(run)], check=False, capture_output=True, timeout=60)
