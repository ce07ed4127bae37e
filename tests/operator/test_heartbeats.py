"""Whose heartbeats count: a node author can name a Kafka of their own in their node, and write to it
anything, including records claiming to be another namespace's node (whose uid anyone who can read
that node knows). Real processes throughout: kube-lite, the operator, embedded brokers (the session's
default Kafka and a rogue one), the victim's bridge run by the kubelet harness."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kubernetes_asyncio import client, config
from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer
from resonance_operator import health
from resonance_operator.monitor import MAX_HELD, Monitor
from resonance_operator.settings import Settings
from resonance_operator.storage import Kube

from ..support.harness import written
from ..support.kube import Cluster, Operator, heartbeat, node, uid_of
from ..support.kubelet import running as kubelet
from ..support.poll import until

TOPIC = "resonance.heartbeats"  # the operator's (RESONANCE_HEARTBEAT_TOPIC's default)


def conditions(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    body = cluster.get("rn", name, namespace) or {}
    return {c["type"]: c["status"] for c in (body.get("status") or {}).get("conditions") or ()}


def connections(operator: Operator, port: int) -> int:
    """The operator process's established TCP connections to a local port, from /proc: what its
    Kafka clients really hold open, not what it says of them."""
    assert operator.process is not None
    pid = operator.process.pid
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = fd.readlink().name
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port, state, inode = int(fields[2].rsplit(":", 1)[1], 16), fields[3], fields[9]
            count += remote_port == port and state == "01" and inode in inodes  # 01: ESTABLISHED
    return count


@contextlib.asynccontextmanager
async def rogue_kafka(tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    """A Kafka of the attacker's own, with the heartbeat topic the operator will read there."""
    rogue = EmbeddedBroker(log_path=tmp_path / "rogue-kafka.log")
    rogue.start()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=rogue.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC, 1, 1)])
        finally:
            await admin.close()
        yield rogue
    finally:
        rogue.stop(grace=0.5)


REJECTED = "resonance_operator_heartbeats_rejected_total"


async def test_heartbeats_forged_for_another_namespaces_node_do_not_count(
    cluster: Cluster, operator: Operator, namespace: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The victim's node (namespace B, the default Kafka) is Ready with its bridge. Its bridge is
    killed while an attacker in namespace A, whose node names a Kafka of theirs, writes records there
    claiming to be B's node (with its real uid, and with another), and writes records with a stale uid
    to the shared default Kafka. B's node turns not Ready, HeartbeatFresh False, and stays so; the
    forged records are counted as rejected, by reason. The attacker's own node's beats, on their
    Kafka, still count: the operator was reading that Kafka all along."""
    victim, attacker = namespace, cluster.namespace(f"t-{uuid.uuid4().hex[:8]}")
    server = NodeServer("lexamoris", port=0, printer=None)
    await server.start()
    async with (
        rogue_kafka(tmp_path) as rogue,
        kubelet(cluster, victim, tmp_path, **{"lexamoris-server:8766": f"127.0.0.1:{server.port}"}) as pods,
    ):
        cluster.apply(node(victim, topic=f"node.{uuid.uuid4().hex[:8]}", frequencyHz=1))
        up = {"Ready": "True", "HeartbeatFresh": "True", "WebSocketConnected": "True"}
        await until(
            lambda: up.items() <= conditions(cluster, victim, "lexamoris").items(), 60, "B's node Ready"
        )
        uid = uid_of(cluster, victim)

        cluster.apply(node(attacker, "mallory", frequencyHz=1, kafka={"bootstrapServers": rogue.bootstrap}))
        own = heartbeat(attacker, "mallory", uid_of(cluster, attacker, "mallory"))
        before = {
            reason: operator.metric(f'{REJECTED}{{reason="{reason}"}}')
            for reason in ("wrong_bootstrap", "uid_mismatch")
        }
        forged = [
            (rogue, heartbeat(victim, "lexamoris", uid)),  # the attacker may know the uid
            (rogue, heartbeat(victim, "lexamoris", str(uuid.uuid4()))),
            (broker, heartbeat(victim, "lexamoris", str(uuid.uuid4()))),  # a deleted namesake's, say
            (rogue, own),
        ]
        async with written(*forged):
            await until(
                lambda: conditions(cluster, attacker, "mallory").get("HeartbeatFresh") == "True",
                30,
                "the attacker's node's beats counted: the operator reads their Kafka",
            )
            pods.hold("resonance-bridge-lexamoris")  # B's bridge is dead from now on
            await until(
                lambda: conditions(cluster, victim, "lexamoris").get("HeartbeatFresh") == "False",
                20,
                "B's node's HeartbeatFresh False with its bridge dead",
            )
            for _ in range(10):  # and it stays so, the forged records still arriving
                await asyncio.sleep(0.5)
                state = conditions(cluster, victim, "lexamoris")
                assert (state["Ready"], state["HeartbeatFresh"]) == ("False", "False"), state
            assert conditions(cluster, attacker, "mallory")["HeartbeatFresh"] == "True"
        after = {reason: operator.metric(f'{REJECTED}{{reason="{reason}"}}') for reason in before}
    await server.close()
    assert after["wrong_bootstrap"] > before["wrong_bootstrap"], (before, after)  # the rogue Kafka's
    assert after["uid_mismatch"] > before["uid_mismatch"], (before, after)  # the default Kafka's


async def test_the_heartbeats_of_a_kafka_no_node_names_are_not_read(
    cluster: Cluster, operator: Operator, namespace: str, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """A node naming a Kafka of its own: the operator connects there to read heartbeats. Its spec
    moves to the default Kafka (named explicitly): the connections close, and its beats are read from
    the default Kafka. Named again, then the node deleted: they close again."""
    consumers = "resonance_operator_heartbeat_consumers"
    async with rogue_kafka(tmp_path) as rogue:
        own = {"bootstrapServers": rogue.bootstrap}
        cluster.apply(node(namespace, "own", frequencyHz=1, kafka=own))
        await until(
            lambda: connections(operator, rogue.port) > 0, 30, "the operator connected to the node's Kafka"
        )
        reading = operator.metric(consumers)

        cluster.patch("rn", "own", namespace, {"spec": {"kafka": {"bootstrapServers": broker.bootstrap}}})
        await until(
            lambda: connections(operator, rogue.port) == 0, 30, "the connections to the old Kafka closed"
        )
        assert operator.metric(consumers) == reading - 1
        async with written((broker, heartbeat(namespace, "own", uid_of(cluster, namespace, "own")))):
            await until(
                lambda: conditions(cluster, namespace, "own").get("HeartbeatFresh") == "True",
                30,
                "its beats read from the default Kafka",
            )

        cluster.patch("rn", "own", namespace, {"spec": {"kafka": own}})
        await until(lambda: connections(operator, rogue.port) > 0, 30, "the operator connected again")
        cluster.kubectl("delete", "rn", "own", "-n", namespace)
        await until(
            lambda: connections(operator, rogue.port) == 0, 30, "the connections closed with the node"
        )
        assert operator.metric(consumers) == reading - 1


async def test_beats_of_nodes_not_reconciled_yet_are_held_boundedly(
    cluster: Cluster, broker: EmbeddedBroker
) -> None:
    """A Monitor of the test's own, on the API server, in a namespace no operator watches: beats
    arriving before their node is reconciled (as at an operator's start) are held, for the node to
    claim; a flood of beats for made-up nodes holds no more than MAX_HELD of them."""
    namespace = cluster.namespace(f"h-{uuid.uuid4().hex[:8]}")
    cluster.apply(node(namespace, frequencyHz=1))
    body = cluster.get("rn", "lexamoris", namespace)
    assert body is not None
    uid = body["metadata"]["uid"]
    await config.load_kube_config(config_file=str(cluster.kubeconfig))
    kube = Kube(client.ApiClient(client.Configuration.get_default_copy()))
    monitor = Monitor(kube, Settings(kafka_bootstrap_servers=broker.bootstrap))
    default = monitor.consumers.default

    def parsed(name: str, uid: str) -> tuple[health.Identity, health.Beat]:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        found = health.parse(heartbeat(namespace, name, uid), time.monotonic(), now)
        assert found is not None
        return found

    try:
        for i in range(2 * MAX_HELD):
            await monitor.heartbeat(default, *parsed(f"forged-{i}", str(uuid.uuid4())))
        assert len(monitor.held) == MAX_HELD and not monitor.beats
        await monitor.heartbeat(default, *parsed("lexamoris", str(uuid.uuid4())))  # not its uid
        await monitor.heartbeat("127.0.0.1:1", *parsed("lexamoris", uid))  # not its Kafka
        await monitor.heartbeat(default, *parsed("lexamoris", ""))  # no uid: held for no one
        assert len(monitor.held) == MAX_HELD
        await monitor.heartbeat(default, *parsed("lexamoris", uid))  # its bridge's
        await monitor.observe(body, None)  # reconciled: the node claims its bridge's beat, none other
        assert monitor.beats[(namespace, "lexamoris")].uid == uid
        stored = cluster.get("rn", "lexamoris", namespace) or {}
        fresh = {c["type"]: c["status"] for c in stored["status"]["conditions"]}["HeartbeatFresh"]
        assert fresh == "True" and stored["status"]["lastHeartbeatTime"]
    finally:
        await monitor.stop()
        await kube.close()
