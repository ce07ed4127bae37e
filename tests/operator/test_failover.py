"""Two operator processes on one Lease: exactly one acts; SIGKILL the leader and the standby takes over
within 30 s; SIGTERM a leader and it hands over at once. No node is ever reconciled by both."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import yaml
from resonance_local.embedded import EmbeddedBroker

from ..support.kube import Cluster, Operator, node
from ..support.poll import until
from ..support.soak import Tally

ACTED = "created Deployment"  # the reconcile outcome an acting operator logs


def operator(cluster: Cluster, broker: str, log: Path, name: str, lease: str, namespace: str) -> Operator:
    process = Operator(cluster.kubeconfig, log, broker)
    process.env.update(
        RESONANCE_POD_NAME=name,
        RESONANCE_LEASE_NAME=lease,
        RESONANCE_WATCH_NAMESPACES=namespace,
    )
    return process


def holder(cluster: Cluster, lease: str) -> str:
    body = cluster.get("lease", lease, "default") or {}
    return str((body.get("spec") or {}).get("holderIdentity") or "").split("_")[0]


async def test_one_leads_and_a_standby_takes_over(
    cluster: Cluster, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    namespace = cluster.namespace(f"f-{uuid.uuid4().hex[:8]}")
    lease = f"failover-{uuid.uuid4().hex[:8]}"
    ops = {
        name: operator(cluster, broker.bootstrap, tmp_path / f"{name}.log", name, lease, namespace)
        for name in ("a", "b")
    }
    for process in ops.values():
        process.start()
    try:
        leader = await until(lambda: holder(cluster, lease), 30, "a leader")
        standby = "b" if leader == "a" else "a"
        cluster.apply(yaml.safe_dump_all([node(namespace, f"n{i}") for i in range(5)]))
        await until(lambda: len(cluster.items("deployments", namespace)) == 5, 60, "5 Deployments")
        await until(lambda: "standing by" in ops[standby].output(), 10, "the standby to say so")
        assert ACTED not in ops[standby].output(), "the standby reconciled"

        ops[leader].kill()  # SIGKILL: no hand-over, the Lease must expire
        killed = time.monotonic()
        cluster.apply(node(namespace, "after"))
        await until(
            lambda: cluster.get("deployment", "resonance-bridge-after", namespace), 45, ops[standby].output
        )
        took = time.monotonic() - killed
        assert took < 30, took
        Tally("operator leader SIGKILLed", "nodes", 6, 6, 0, 0, took, "a standby took over").publish()
        assert holder(cluster, lease) == standby
        assert len(cluster.items("deployments", namespace)) == 6  # one each, none twice

        # The killed one comes back as a standby; the leader, stopped cleanly, hands over at once.
        seen = len(ops[leader].output())
        ops[leader].start()
        await until(lambda: "standing by" in ops[leader].output()[seen:], 30, "the restarted one to wait")
        ops[standby].stop()
        stopped = time.monotonic()
        cluster.apply(node(namespace, "handover"))
        await until(lambda: cluster.get("deployment", "resonance-bridge-handover", namespace), 30, "handover")
        took = time.monotonic() - stopped
        assert took < 10, took
        Tally("operator leader SIGTERMed", "nodes", 1, 1, 0, 0, took, "handed the Lease over").publish()
        assert holder(cluster, lease) == leader
        body = cluster.get("lease", lease, "default") or {}
        assert body["spec"]["leaseTransitions"] >= 2
    finally:
        for process in ops.values():
            process.kill()
