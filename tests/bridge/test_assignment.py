"""KAFKA_ASSIGNMENT=direct (what the operator sets for a node with one replica): every partition of
the topic read at once with no group join, committed to the group all the same. (A topic that
appears, or gets more partitions, while the bridge runs is picked up by the Kafka probe every 5 s;
tansu creates a topic on first mention and cannot add partitions, so neither is tested here.)"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Topics, bridge_env, produce_to, seqs


async def test_direct_assignment_reads_every_partition_and_resumes_from_the_groups_commits(
    broker: EmbeddedBroker, workdir: Path
) -> None:
    topics = Topics.fresh()
    await topics.create(broker, 2)
    node = NodeServer("direct", port=0, printer=None)
    await node.start()
    try:
        await produce_to(broker, topics.node, {0: range(0, 50), 1: range(50, 100)})
        env = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", KAFKA_ASSIGNMENT="direct")
        bridge = BridgeProcess(env, workdir / "first.log").start()
        try:
            await node.wait_for(lambda: sorted(seqs(node)) == list(range(100)), 30)
            bridge.signal(signal.SIGTERM)  # a clean stop commits what the node acked
            assert await asyncio.to_thread(bridge.wait, 15) == 0, bridge.output()
        finally:
            bridge.stop()

        await produce_to(broker, topics.node, {0: range(100, 110), 1: range(110, 120)})
        bridge = BridgeProcess(env, workdir / "again.log").start()
        try:
            await node.wait_for(lambda: len(seqs(node)) >= 120, 30)
            await asyncio.sleep(1)
        finally:
            bridge.stop()
        assert sorted(seqs(node)) == list(range(120)), "each record once: the group's commits were used"
        assert "joined group" not in bridge.output().lower()
    finally:
        await node.close()
