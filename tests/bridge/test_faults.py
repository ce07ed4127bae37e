"""Transient failures are retried forever: a broker that comes late or goes away mid-run, a node
that stops acking, a node name that does not resolve."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from resonance_local.embedded import EmbeddedBroker, free_port
from resonance_local.node import NodeServer

from ..support.harness import (
    BridgeProcess,
    Committed,
    Topics,
    bridge_env,
    consume,
    produce,
    seqs,
    state_update,
)
from ..support.poll import until
from ..support.proxy import Proxied


async def test_broker_down_at_start_is_waited_for(topics: Topics, node: NodeServer, workdir: Path) -> None:
    late = EmbeddedBroker(port=free_port(), log_path=workdir / "late-broker.log")
    env = bridge_env(late, topics, f"ws://127.0.0.1:{node.port}")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await until(lambda: bridge.status("/readyz") == 503, 20, bridge.output)
        await asyncio.sleep(2)  # several failed attempts
        assert bridge.process is not None and bridge.process.poll() is None, bridge.output()
        assert "kafka unreachable: KafkaConnectionError" in bridge.get("/readyz")[1]
        assert bridge.metric("resonance_reconnects_total", side="kafka") >= 1
        late.start()
        await topics.create(late)
        await produce(late, topics.node, (state_update(i) for i in range(10)))
        await node.wait_for(lambda: sum(m["type"] == "state_update" for m in node.received) == 10, 60)
        await bridge.wait_ready()
    finally:
        bridge.stop()
        late.stop()


@pytest.mark.parametrize("assignment", ["group", "direct"])
async def test_broker_outage_mid_stream_loses_nothing_either_way(
    proxied: Proxied, node: NodeServer, workdir: Path, assignment: str
) -> None:
    """The broker is cut off (every connection reset, new ones refused) while records flow both
    ways, then reachable again with its data, as a restarted Kafka broker is. While it is away
    readiness says so and no inbound frame is acked; afterwards every outbound record reaches the
    node and every inbound frame is stored and acked. Duplicates are allowed, loss is not. A direct
    bridge (no group membership to lose) notices the outage just the same."""
    broker, proxy, topics = await proxied()
    await produce(broker, topics.node, (state_update(i) for i in range(1000)))
    node.ack_delay = 0.002  # slow enough that the outage lands mid-stream
    env = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", KAFKA_ASSIGNMENT=assignment)
    bridge = BridgeProcess(env, workdir / "bridge.log")

    async def send_inbound() -> None:
        for i in range(1000):
            await node.send(state_update(i).decode())
            await asyncio.sleep(0.005)

    try:
        bridge.start()
        await bridge.wait_ready()
        sender = asyncio.create_task(send_inbound())
        await node.wait_for(lambda: len(seqs(node)) >= 300, 30)
        await proxy.cut()
        await until(lambda: bridge.status("/readyz") == 503, 30, bridge.output)
        assert "kafka disconnected" in bridge.get("/readyz")[1]
        # Counted where the acks are sent: the node reads its frames slowly (ack_delay), so acks the
        # bridge sent before the outage can still reach it afterwards.
        held = bridge.metric("resonance_acks_total", direction="to_node")
        await asyncio.sleep(2)
        assert bridge.metric("resonance_acks_total", direction="to_node") == held, "acked, broker away"

        await proxy.start()
        await sender
        await produce(broker, topics.node, (state_update(i) for i in range(1000, 1500)))  # fetching resumed
        await node.wait_for(lambda: set(seqs(node)) == set(range(1500)), 120)
        await node.wait_for(lambda: sum(r["type"] == "ack" for r in node.replies) == 1000, 120)
        stored = [inbound_seq(r) for r in await consume(broker, topics.inbound, 1000, key=inbound_seq)]
        assert set(stored) == set(range(1000))
        async with Committed(broker, topics) as committed:
            await committed.settles_at(1500)
        out, inbound = len(seqs(node)) - 1500, len(stored) - 1000
        print(f"broker outage at {held:.0f} inbound acks: duplicates {out} outbound, {inbound} inbound")
        await bridge.wait_ready(60)

        # aiokafka logs each failed connect and metadata attempt, many a second: held to one a minute.
        lines = [line.split(" ", 2)[2] for line in bridge.output().splitlines() if " aiokafka" in line]
        library = Counter(re.sub(r"\d+", "N", line) for line in lines)
        assert library and max(library.values()) <= 2, library
    finally:
        bridge.stop()


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
            await committed.settles_at(20, 10)
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
        status, body = bridge.get("/readyz")
        assert status == 503 and body.startswith("kafka connected, websocket unreachable: "), body
        assert "no-such-node.invalid" in body or "Name or service not known" in body, body
        assert "no-such-node.invalid" in bridge.output()
    finally:
        bridge.stop()


async def test_a_refused_token_is_retried_slowly_named_and_recovered_from(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    """A node that answers 401 to a wrong RESONANCE_AUTH_TOKEN is not hammered: the bridge retries
    about once per RESONANCE_REFUSED_RETRY_S (60 s by default; 4 s here), logs the refusal once,
    names it in /readyz, and connects on the next slow retry once the node accepts its token."""
    guarded = NodeServer("guarded", port=0, printer=None, token="right")
    await guarded.start()
    port = guarded.port
    env = bridge_env(
        broker, topics, f"ws://127.0.0.1:{port}", RESONANCE_AUTH_TOKEN="wrong", RESONANCE_REFUSED_RETRY_S="4"
    )
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    accepting = NodeServer("accepting", port=port, printer=None, token="wrong")
    try:
        await until(lambda: guarded.refused >= 1, 30, bridge.output)
        await until(lambda: "HTTP 401" in bridge.get("/readyz")[1], 10, bridge.output)
        assert bridge.get("/readyz") == (
            503,
            "kafka connected, websocket refused: HTTP 401 (check RESONANCE_AUTH_TOKEN)\n",
        )
        await asyncio.sleep(9)
        assert 2 <= guarded.refused <= 4, guarded.refused  # 3-4 s apart, not 0.1-10 s
        assert sum("HTTP 401" in line for line in bridge.output().splitlines()) == 1
        assert bridge.metric("resonance_connect_failures_total", side="websocket", reason="http_401") == (
            guarded.refused
        )
        await guarded.close()
        await accepting.start()
        await bridge.wait_ready(4 + 2)  # within one slow retry
        assert accepting.last_authorization == "Bearer wrong"
    finally:
        bridge.stop()
        await guarded.close()
        await accepting.close()


def inbound_seq(record: Any) -> int:
    return int(json.loads(record.value)["data"]["seq"])
