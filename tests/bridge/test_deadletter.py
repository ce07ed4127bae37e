"""Bad frames and records: never a crash, never a silent drop; each lands in the dead-letter topic."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Topics, bridge_env, consume, produce, state_update
from ..support.poll import until

BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("this is not json", "not_json"),
    ("[1, 2, 3]", "not_object"),
    ('{"anchor": "BOLZANO_71"}', "missing_type"),
    ('{"type": 42}', "type_not_string"),
    ('{"type": "state_update", "anchor": "BOLZANO_71"}', "missing_field"),
    (b"\x00\x01binary", "binary_frame"),
    (json.dumps({"type": "state_update", "data": {"blob": "x" * 3000}}), "too_large"),
]


async def test_each_bad_frame_is_dead_lettered_and_good_frames_still_flow(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path
) -> None:
    env = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", RESONANCE_MAX_FRAME_BYTES="2048")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await bridge.wait_ready()
        for frame, _ in BAD_FRAMES:
            await node.send(frame)
        await node.send('{"type": "vibration", "hz": 7}')  # unknown but well-formed: relayed
        await node.send('{"type": "state_update", "data": {"ok": true}}')
        await node.wait_for(lambda: len(node.replies) == len(BAD_FRAMES) + 2, 20)

        errors = node.replies[: len(BAD_FRAMES)]
        assert [e["type"] for e in errors] == ["error"] * len(BAD_FRAMES)
        assert [e["reason"] for e in errors] == [reason for _, reason in BAD_FRAMES]
        assert errors[4]["original_type"] == "state_update"
        assert "'data'" in errors[4]["detail"]
        assert node.replies[-2:] == [
            {"type": "ack", "original_type": "vibration"},
            {"type": "ack", "original_type": "state_update"},
        ]

        dead = await consume(broker, topics.deadletter, len(BAD_FRAMES))
        for record, (frame, reason) in zip(dead, BAD_FRAMES, strict=True):
            headers = {k: v.decode() for k, v in record.headers}
            assert headers["resonance-reason"] == reason
            assert headers["resonance-node"] == "testnode"
            assert headers["resonance-direction"] == "inbound"
            assert headers["resonance-time"].startswith("20")
            raw = frame if isinstance(frame, bytes) else frame.encode()
            assert record.value == raw[:2048]
        assert {k: v for k, v in dead[-1].headers}["resonance-truncated"] == b"true"

        inbound = await consume(broker, topics.inbound, 2)
        assert [json.loads(r.value)["type"] for r in inbound] == ["vibration", "state_update"]
        assert bridge.metric("resonance_dead_letters_total", direction="inbound", reason="not_json") == 1
        assert bridge.metric("resonance_unknown_type_messages_total", direction="inbound") == 1
        assert bridge.process is not None and bridge.process.poll() is None
    finally:
        bridge.stop()


async def test_frame_too_large_to_read_is_dead_lettered_and_the_node_reconnected(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path
) -> None:
    """Frames up to 8x the limit are read and dead-lettered whole (above); a larger one makes the
    WebSocket layer close the connection (1009) unread. That too is dead-lettered, as an event."""
    env = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", RESONANCE_MAX_FRAME_BYTES="2048")
    bridge = BridgeProcess(env, workdir / "bridge.log").start()
    try:
        await bridge.wait_ready()
        await node.send(json.dumps({"type": "state_update", "data": {"blob": "x" * 20000}}))
        await until(lambda: node.connections_seen >= 2, 30, bridge.output)
        await bridge.wait_ready()
        await node.send('{"type": "state_update", "data": {"ok": true}}')
        await node.wait_for(lambda: {"type": "ack", "original_type": "state_update"} in node.replies, 20)

        [dead] = await consume(broker, topics.deadletter, 1)
        headers = {k: v.decode() for k, v in dead.headers}
        assert (dead.value, headers["resonance-reason"]) == (b"", "too_large")
        assert headers["resonance-original-size"] == "unknown"
        assert "1009" in headers["resonance-detail"] and "at most 2048 bytes" in headers["resonance-detail"]
        assert bridge.metric("resonance_dead_letters_total", direction="inbound", reason="too_large") == 1
    finally:
        bridge.stop()


async def test_bad_record_in_node_topic_is_dead_lettered_and_committed_past(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path
) -> None:
    await produce(broker, topics.node, [state_update(0), b"{broken", state_update(1)])
    bridge = BridgeProcess(
        bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}"), workdir / "b.log"
    ).start()
    try:
        await node.wait_for(lambda: sum(m["type"] == "state_update" for m in node.received) == 2, 20)
        dead = await consume(broker, topics.deadletter, 1)
        headers = {k: v.decode() for k, v in dead[0].headers}
        assert dead[0].value == b"{broken"
        assert headers["resonance-reason"] == "not_json"
        assert headers["resonance-direction"] == "outbound"
        assert headers["resonance-source"] == f"{topics.node}/0/1"
    finally:
        bridge.stop()


async def test_records_kafka_refuses_for_size_are_dead_lettered_cut_to_fit(
    broker: EmbeddedBroker, topics: Topics
) -> None:
    """A broker's message.max.bytes (1 MB by default) refuses a 1 MiB frame with its headers, forever:
    retrying would stall the node's replies. The record is dead-lettered instead, its payload cut until
    Kafka takes it. Here the producer's own size limit stands in for the broker's (same error)."""
    from aiokafka import AIOKafkaProducer
    from resonance_bridge import codec
    from resonance_bridge.config import load
    from resonance_bridge.writer import KafkaWriter

    config = load(bridge_env(broker, topics, "ws://127.0.0.1:1"))
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, enable_idempotence=False, acks="all", max_request_size=70_000
    )
    await producer.start()
    try:
        writer = KafkaWriter(config, producer, asyncio.Event())
        big = json.dumps({"type": "state_update", "data": {"blob": "x" * 100_000}}).encode()
        decoded = codec.decode(big, config.max_frame_bytes)
        assert isinstance(decoded, codec.Message)
        reply = await writer.request(decoded)
        await writer.settle(reply)
        assert json.loads(reply.answer)["reason"] == "kafka_rejected" and reply.error == "kafka_rejected"
        await writer.dead_letter(codec.Rejected("not_json", "bad", b"y" * 100_000), "outbound")
    finally:
        await producer.stop()
    dead = await consume(broker, topics.deadletter, 2)
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert len(record.value) == 64 * 1024 and headers["resonance-truncated"] == "true"
        assert headers["resonance-original-size"] in {str(len(big)), "100000"}
    assert [dict(r.headers)["resonance-reason"] for r in dead] == [b"kafka_rejected", b"not_json"]
