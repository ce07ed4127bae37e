"""The bridge against a real broker and a real node: both directions, in order, at-least-once."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from resonance_local.embedded import EmbeddedBroker, free_port
from resonance_local.node import Node, NodeServer
from resonance_local.nodeclient import NodeClient

from ..support.harness import (
    BridgeProcess,
    Committed,
    Topics,
    bridge_env,
    consume,
    everything,
    produce,
    seqs,
    state_update,
)
from ..support.poll import until


@pytest.fixture(params=["dial", "listen"])
async def node(request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    """Each relay rule holds whichever side dialled: a node server the bridge dials, or a node that
    dials a listening bridge (the same Session serves both: listener.py)."""
    made: Node
    if request.param == "dial":
        made = NodeServer("testnode", port=0, printer=None)
    else:
        made = NodeClient("testnode", f"ws://127.0.0.1:{free_port()}/", printer=None)
    await made.start()
    yield made
    await made.close()


def endpoint(node: Node) -> str | NodeClient:
    return node if isinstance(node, NodeClient) else f"ws://127.0.0.1:{node.port}"  # type: ignore[attr-defined]


async def test_outbound_in_order_and_commits_never_pass_acks(
    broker: EmbeddedBroker, topics: Topics, node: Node, workdir: Path
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


async def kafka_count(broker: EmbeddedBroker, topic: str) -> int:
    """How many records the broker holds now."""
    return len(await everything(broker, topic))


async def test_inbound_acked_only_after_kafka_stored(
    broker: EmbeddedBroker, topics: Topics, node: Node, workdir: Path
) -> None:
    bridge = BridgeProcess(bridge_env(broker, topics, endpoint(node)), workdir / "bridge.log").start()
    try:
        await bridge.wait_ready()
        await asyncio.wait_for(node.connected.wait(), 30)  # a listening bridge is ready before the node dials

        def acks() -> list[dict[str, object]]:
            return [r for r in node.replies if r["type"] == "ack"]

        for i in range(1000):
            await node.send(state_update(i).decode())
            if i % 100 == 99:  # an ack the node holds must be for a record the broker already has
                seen = len(acks())
                assert await kafka_count(broker, topics.inbound) >= seen
        await node.wait_for(lambda: len(acks()) == 1000, 30)
        assert all(a["original_type"] == "state_update" for a in acks())
        records = await consume(broker, topics.inbound, 1000)
        assert [json.loads(r.value)["data"]["seq"] for r in records] == list(range(1000))
        assert {r.key for r in records} == {b"testnode"}  # the node's name, not the shared anchor
        headers = dict(records[0].headers)
        assert headers["resonance-node"] == b"testnode"
        assert headers["resonance-anchor"] == b"BOLZANO_71"
        assert headers["resonance-type"] == b"state_update"
        assert bridge.metric("resonance_acks_total", direction="to_node") == 1000

        # An ack carries the id as the node sent it: a number stays a number.
        ids: list[object] = [7, "m-7", 2**64 - 1, -1]
        for sent in ids:
            await node.send(json.dumps({"type": "state_update", "data": {}, "id": sent}))
        await node.wait_for(lambda: len(acks()) == 1000 + len(ids), 30)
        assert [a.get("id") for a in acks()[1000:]] == ids
    finally:
        bridge.stop()


async def test_node_crash_loses_nothing(broker: EmbeddedBroker, topics: Topics, workdir: Path) -> None:
    first = NodeServer("first", port=0, printer=None, ack_delay=0.001)
    await first.start()
    port = first.port
    await produce(broker, topics.node, (state_update(i) for i in range(1000)))
    bridge = BridgeProcess(
        bridge_env(broker, topics, f"ws://127.0.0.1:{port}"), workdir / "bridge.log"
    ).start()
    second = NodeServer("second", port=port, printer=None)
    try:
        await first.wait_for(lambda: len(seqs(first)) >= 300, 30)
        await first.kill()
        await second.start()
        await second.wait_for(lambda: set(seqs(first)) | set(seqs(second)) == set(range(1000)), 30)
        delivered = seqs(first) + seqs(second)
        duplicates = len(delivered) - 1000
        assert seqs(first) == list(range(len(seqs(first))))  # in order up to the crash
        # The second connection resumes at the first unacked record, which the first node had not acked.
        assert seqs(second)[0] <= first.acks_sent
        assert seqs(second) == list(range(seqs(second)[0], 1000))
        print(f"node crash: {duplicates} duplicates, 0 lost")
        assert bridge.metric("resonance_reconnects_total", side="websocket") >= 1
    finally:
        bridge.stop()
        await second.close()


async def test_bridge_sigkill_loses_nothing(
    broker: EmbeddedBroker, topics: Topics, node: Node, workdir: Path
) -> None:
    node.ack_delay = 0.001
    await produce(broker, topics.node, (state_update(i) for i in range(1000)))
    env = bridge_env(broker, topics, endpoint(node))
    first = BridgeProcess(env, workdir / "first.log").start()
    second = BridgeProcess(env, workdir / "second.log")
    try:
        await node.wait_for(lambda: len(seqs(node)) >= 300, 30)
        first.signal(signal.SIGKILL)
        assert first.wait(5) == -signal.SIGKILL
        await until(lambda: not node.connections, 10, "the node never saw the killed bridge go")
        cut = len(seqs(node))
        second.start()
        await node.wait_for(lambda: set(seqs(node)) == set(range(1000)), 60)
        resumed = seqs(node)[cut:]
        assert resumed == list(range(resumed[0], 1000)), "the restarted bridge resumes in order"
        assert resumed[0] <= cut
        print(f"bridge SIGKILL: {len(seqs(node)) - 1000} duplicates, 0 lost")
    finally:
        first.stop()
        second.stop()


async def test_inbound_keeps_the_nodes_order_across_batched_and_large_frames(
    broker: EmbeddedBroker, topics: Topics, node: Node, workdir: Path
) -> None:
    """Small frames go to Kafka in batches, large ones (over 64 KiB) alone: the topic still holds
    them in the order the node sent them, each once, and each ack follows its record's storing."""
    bridge = BridgeProcess(bridge_env(broker, topics, endpoint(node)), workdir / "bridge.log").start()
    try:
        await bridge.wait_ready()
        await asyncio.wait_for(node.connected.wait(), 30)  # a listening bridge is ready before the node dials
        sizes = {i: (100_000 if i % 97 == 13 else 10) for i in range(600)}
        for i, size in sizes.items():
            body = {"type": "state_update", "data": {"seq": i, "pad": "x" * size}}
            await node.send(json.dumps(body))
        await node.wait_for(lambda: sum(r["type"] == "ack" for r in node.replies) == 600, 60)
        records = await consume(broker, topics.inbound, 600)
        assert [json.loads(r.value)["data"]["seq"] for r in records] == list(range(600))
    finally:
        bridge.stop()
