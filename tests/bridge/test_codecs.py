"""Compressed batches, as producers in the field write them (a Java client's compression.type=lz4 or
zstd is common): every codec Kafka defines is delivered."""

from __future__ import annotations

from pathlib import Path

from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Topics, bridge_env, produce_to, seqs
from ..support.poll import until

CODECS = (None, "gzip", "snappy", "lz4", "zstd")
PARTITIONS = 4


async def test_every_codec_interleaved_on_four_partitions_is_delivered(
    broker: EmbeddedBroker, node: NodeServer, workdir: Path
) -> None:
    topics = Topics.fresh()
    await topics.create(broker, PARTITIONS)
    sent = 0
    for _ in range(2):  # each partition holds batches of every codec, interleaved
        for codec in CODECS:
            first = sent
            await produce_to(
                broker, topics.node, {p: range(first + 10 * p, first + 10 * p + 10) for p in range(4)}, codec
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
