"""Compressed batches, as producers in the field write them (a Java client's compression.type=lz4 or
zstd is common): every codec Kafka defines is delivered."""

from __future__ import annotations

from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Topics, bridge_env, seqs, state_update
from ..support.poll import until

CODECS = (None, "gzip", "snappy", "lz4", "zstd")
PARTITIONS = 4


async def topic_of(broker: EmbeddedBroker, partitions: int) -> Topics:
    topics = Topics.fresh()
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topics.node, partitions, 1)] + [NewTopic(t, 1, 1) for t in topics.all()[1:]]
        )
    finally:
        await admin.close()
    return topics


async def write(broker: EmbeddedBroker, topic: str, codec: str | None, records: dict[int, range]) -> None:
    """One producer with this compression, each partition's records sent and flushed as a batch."""
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, enable_idempotence=False, compression_type=codec
    )
    await producer.start()
    try:
        for partition, numbers in records.items():
            for seq in numbers:
                await producer.send(topic, state_update(seq), partition=partition)
            await producer.flush()
    finally:
        await producer.stop()


async def test_every_codec_interleaved_on_four_partitions_is_delivered(
    broker: EmbeddedBroker, node: NodeServer, workdir: Path
) -> None:
    topics = await topic_of(broker, PARTITIONS)
    sent = 0
    for _ in range(2):  # each partition holds batches of every codec, interleaved
        for codec in CODECS:
            first = sent
            await write(
                broker, topics.node, codec, {p: range(first + 10 * p, first + 10 * p + 10) for p in range(4)}
            )
            sent += 10 * PARTITIONS
    env = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", RESONANCE_MAX_IN_FLIGHT="50")
    bridge = BridgeProcess({**env, "KAFKA_ASSIGNMENT": "direct", "KAFKA_AUTO_OFFSET_RESET": "earliest"},
                           workdir / "bridge.log").start()  # fmt: skip
    try:
        await until(lambda: len(set(seqs(node))) == sent, 30, bridge.output)
        assert sorted(set(seqs(node))) == list(range(sent))
        assert "UnsupportedCodec" not in bridge.output()
    finally:
        bridge.stop()
