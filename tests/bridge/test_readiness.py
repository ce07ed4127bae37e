"""Readiness from progress: a consumer that stops consuming, or records that cannot be stored, make
the bridge not ready, saying why; a consumer in a fatal state is replaced. Delivery then resumes with
nothing lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from resonance_local.embedded import EmbeddedBroker
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
from ..support.kafkafault import FETCH, GROUP_ID_NOT_FOUND, HEARTBEAT, NOT_LEADER_OR_FOLLOWER, KafkaFaults
from ..support.poll import until
from ..support.proxy import Proxied


async def faulty(
    proxied: Proxied, node: NodeServer, workdir: Path, **env: str
) -> tuple[EmbeddedBroker, Topics, KafkaFaults, BridgeProcess]:
    """A broker whose answers the test may change on the wire, and a bridge on it (not started)."""
    broker, proxy, topics = await proxied()
    proxy.kafka = faults = KafkaFaults()
    settings = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", **env)
    return broker, topics, faults, BridgeProcess(settings, workdir / "bridge.log")


async def test_a_group_consumer_in_a_fatal_state_is_not_ready_and_is_replaced(
    proxied: Proxied, node: NodeServer, workdir: Path
) -> None:
    """The group coordinator answers a heartbeat with an error aiokafka cannot recover from: every
    getmany() raises it from then on, for ever. The bridge says so in /readyz, replaces the consumer,
    and every record is delivered."""
    broker, topics, faults, bridge = await faulty(
        proxied, node, workdir, KAFKA_ASSIGNMENT="group", KAFKA_AUTO_OFFSET_RESET="earliest"
    )
    bridge.start()
    said: list[str] = []

    async def watch() -> None:  # every /readyz answer that is not 200, as it happens
        while True:
            status, body = await asyncio.to_thread(bridge.get, "/readyz")
            if status != 200:
                said.append(body)
            await asyncio.sleep(0.02)

    try:
        await bridge.wait_ready()
        await produce(broker, topics.node, (state_update(i) for i in range(100)))
        await until(lambda: set(seqs(node)) == set(range(100)), 30, bridge.output)
        watching = asyncio.create_task(watch())
        faults.next_response(HEARTBEAT, GROUP_ID_NOT_FOUND)
        await until(lambda: faults.injected, 10, "a heartbeat answered with GroupIdNotFound")
        await produce(broker, topics.node, (state_update(i) for i in range(100, 200)))
        await until(lambda: set(seqs(node)) == set(range(200)), 60, bridge.output)
        watching.cancel()
        assert any("consumer failing" in body for body in said), said
        assert "kafka consumer failed for good" in bridge.output()
        async with Committed(broker, topics) as committed:
            await committed.settles_at(200)
        await bridge.wait_ready()
    finally:
        bridge.stop()


async def test_a_consumer_whose_fetches_never_complete_is_not_ready_within_its_deadline(
    proxied: Proxied, node: NodeServer, workdir: Path
) -> None:
    """The broker answers metadata (the probe is content), but every fetch of the partition fails
    with an error aiokafka retries quietly for ever (its leader never comes back): nothing raises,
    getmany() just returns nothing. Readiness comes from progress: 503 once no fetch completed for
    the request timeout plus 5 s, saying so; 200 and everything delivered once fetches work again."""
    direct = {"KAFKA_ASSIGNMENT": "direct", "KAFKA_AUTO_OFFSET_RESET": "earliest"}
    timeout = {"KAFKA_REQUEST_TIMEOUT_MS": "5000"}  # a deadline of 10 s
    broker, topics, faults, bridge = await faulty(proxied, node, workdir, **direct, **timeout)
    bridge.start()
    try:
        await bridge.wait_ready()
        await produce(broker, topics.node, (state_update(i) for i in range(50)))
        await until(lambda: set(seqs(node)) == set(range(50)), 30, bridge.output)
        faults.fail(FETCH, NOT_LEADER_OR_FOLLOWER)
        await produce(broker, topics.node, (state_update(i) for i in range(50, 100)))
        await until(lambda: bridge.status("/readyz") == 503, 30, bridge.output)
        assert "consumer stalled: no fetch completed for" in bridge.readyz(), bridge.readyz()
        faults.heal()
        await until(lambda: set(seqs(node)) == set(range(100)), 60, bridge.output)
        await bridge.wait_ready()
    finally:
        bridge.stop()


async def test_an_inbound_topic_that_does_not_exist_is_not_ready_and_acks_nothing(
    proxied: Proxied, node: NodeServer, workdir: Path
) -> None:
    """A Kafka that does not create topics on first use, and no inbound topic: the node's messages
    wait (unacked) for the topic, and /readyz says which topic; once it exists they are stored and
    acked."""
    broker, topics, faults, bridge = await faulty(proxied, node, workdir, KAFKA_REQUEST_TIMEOUT_MS="5000")
    faults.missing.add(topics.inbound)
    bridge.start()
    try:
        await bridge.wait_ready()
        await node.send(state_update(1).decode())
        await until(lambda: bridge.status("/readyz") == 503, 30, bridge.output)
        assert f"cannot store in {topics.inbound}" in bridge.readyz(), bridge.readyz()
        assert not [r for r in node.replies if r["type"] == "ack"]
        faults.heal()
        await node.wait_for(lambda: [r["type"] for r in node.replies] == ["ack"], 30)
        assert [r.value for r in await consume(broker, topics.inbound, 1)] == [state_update(1)]
        await bridge.wait_ready()
    finally:
        bridge.stop()
