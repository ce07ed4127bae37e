"""The bridge against a real broker and a real node: both directions, in order, at-least-once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from resonance_bridge.embedded import EmbeddedBroker
from resonance_bridge.node import NodeServer

from .harness import BridgeProcess, Committed, Topics, bridge_env, consume, produce, state_update, until


def endpoint(node: NodeServer) -> str:
    return f"ws://127.0.0.1:{node.port}"


def seqs(node: NodeServer) -> list[int]:
    return [m["data"]["seq"] for m in node.received if m["type"] == "state_update"]


async def test_outbound_in_order_and_commits_never_pass_acks(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path
) -> None:
    await produce(broker, topics.node, (state_update(i) for i in range(1000)))
    bridge = BridgeProcess(bridge_env(broker, topics, endpoint(node)), workdir / "bridge.log").start()
    try:
        async with Committed(broker, topics) as committed:
            samples = 0
            while len(seqs(node)) < 1000 or await committed.offset() < 1000:
                offset = await committed.offset()
                acked = sum(1 for m in node.received[: node.acks_sent] if m["type"] == "state_update")
                assert offset <= acked, f"committed {offset} but the node acked only {acked} records"
                samples += 1
                assert samples < 2000, bridge.output()
                await asyncio.sleep(0.01)
        assert seqs(node) == list(range(1000))
        assert bridge.metric("resonance_messages_relayed_total", direction="outbound") == 1000
    finally:
        bridge.stop()
