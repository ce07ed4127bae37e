"""Transient failures are retried forever: a broker that comes late, a node that stops acking, a
node name that does not resolve."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from resonance_bridge.embedded import EmbeddedBroker, free_port
from resonance_bridge.node import NodeServer

from .harness import BridgeProcess, Committed, Topics, bridge_env, produce, state_update, until


async def test_broker_down_at_start_is_waited_for(topics: Topics, node: NodeServer, workdir: Path) -> None:
    late = EmbeddedBroker(port=free_port(), log_path=workdir / "late-broker.log")
    env = bridge_env(late, topics, f"ws://127.0.0.1:{node.port}")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await until(lambda: bridge.status("/readyz") == 503, 20, bridge.output)
        await asyncio.sleep(2)  # several failed attempts
        assert bridge.process is not None and bridge.process.poll() is None, bridge.output()
        assert "kafka disconnected" in bridge.get("/readyz")[1]
        assert bridge.metric("resonance_reconnects_total", side="kafka") >= 1
        late.start()
        admin = AIOKafkaAdminClient(bootstrap_servers=late.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(t, 1, 1) for t in topics.all()])
        await admin.close()
        await produce(late, topics.node, (state_update(i) for i in range(10)))
        await node.wait_for(lambda: sum(m["type"] == "state_update" for m in node.received) == 10, 60)
        await bridge.wait_ready()
    finally:
        bridge.stop()
        late.stop()


async def test_node_that_stops_acking_gets_redelivery(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path
) -> None:
    node.ack = False
    await produce(broker, topics.node, (state_update(i) for i in range(20)))
    env = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", RESONANCE_ACK_TIMEOUT_S="1")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await node.wait_for(lambda: sum(m["type"] == "state_update" for m in node.received) >= 20, 20)
        await until(lambda: node.connections_seen >= 2, 20, "the bridge never gave up on the silent node")
        node.ack = True
        async with Committed(broker, topics) as committed:
            for _ in range(200):
                if await committed.offset() == 20:
                    break
                await asyncio.sleep(0.05)
            assert await committed.offset() == 20
        delivered = [m["data"]["seq"] for m in node.received if m["type"] == "state_update"]
        assert delivered[:20] == list(range(20)) and set(delivered) == set(range(20))
        assert len(delivered) >= 40  # everything was delivered again after the timeout
        assert bridge.metric("resonance_ack_timeouts_total") >= 1
    finally:
        bridge.stop()


async def test_unresolvable_node_is_retried_without_crashing(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    env = bridge_env(broker, topics, "ws://no-such-node.invalid:8766")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await until(
            lambda: bridge.metric("resonance_reconnects_total", side="websocket") >= 3, 30, bridge.output
        )
        assert bridge.get("/readyz") == (503, "kafka connected, websocket disconnected\n")
        assert "no-such-node.invalid" in bridge.output()
    finally:
        bridge.stop()
