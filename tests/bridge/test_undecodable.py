"""A record batch that cannot be decoded, stored in the broker's log as a producer wrote it: a CRC
mismatch, a payload that does not decompress, a codec the bridge cannot read. The records around it
are delivered, on its partition and on the others, and the batch is dead-lettered, once; or, when
the spec asks, its partition stops there and readiness says so."""

from __future__ import annotations

import asyncio
from pathlib import Path

from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Committed, Topics, bridge_env, consume, produce_to, seqs
from ..support.poll import until
from ..support.rawbatch import GZIP, batch, without_cramjam, write_raw

BAD = [b'{"type": "state_update", "data": {"never": "decoded"}}'] * 3


async def corrupt(broker: EmbeddedBroker, topic: str) -> int:
    return await write_raw(broker, topic, 0, batch(BAD, bad_crc=True))


async def not_gzip(broker: EmbeddedBroker, topic: str) -> int:
    return await write_raw(broker, topic, 0, batch(BAD, codec_id=GZIP))


async def layout(broker: EmbeddedBroker, topics: Topics, *bad: object) -> list[int]:
    """Partition 0: seqs 0-9, a bad batch, 10-19, another bad batch, 20-29. Partition 1: 100-129,
    written between them. Each bad writer stores three records and returns its base offset."""
    offsets = []
    for i, write in enumerate(bad):
        await produce_to(
            broker, topics.node, {0: range(10 * i, 10 * i + 10), 1: range(100 + 10 * i, 110 + 10 * i)}
        )
        offsets.append(await write(broker, topics.node))  # type: ignore[operator]
    n = len(bad)
    await produce_to(
        broker, topics.node, {0: range(10 * n, 10 * n + 10), 1: range(100 + 10 * n, 110 + 10 * n)}
    )
    return offsets


def start(
    broker: EmbeddedBroker, topics: Topics, node: NodeServer, workdir: Path, **env: str
) -> BridgeProcess:
    settings = bridge_env(broker, topics, f"ws://127.0.0.1:{node.port}", RESONANCE_MAX_IN_FLIGHT="7")
    settings |= {"KAFKA_ASSIGNMENT": "direct", "KAFKA_AUTO_OFFSET_RESET": "earliest", **env}
    return BridgeProcess(settings, workdir / "bridge.log").start()


async def dead_lettered(
    broker: EmbeddedBroker, topics: Topics, bridge: BridgeProcess, offsets: list[int], errors: list[str]
) -> None:
    """One dead letter per bad batch, in order, naming it; the group's commit moves past them all."""
    dead = await consume(broker, topics.deadletter, len(offsets))
    headers = [{k: v.decode() for k, v in record.headers} for record in dead]
    assert len(dead) == len(offsets)
    for h, first, error in zip(headers, offsets, errors, strict=True):
        assert (h["resonance-reason"], h["resonance-direction"]) == ("undecodable_batch", "outbound")
        assert h["resonance-source"] == f"{topics.node}/0/{first}-{first + 2}"
        assert (h["resonance-first-offset"], h["resonance-last-offset"]) == (str(first), str(first + 2))
        assert error in h["resonance-detail"]
    assert bridge.metric("resonance_undecodable_batches_total", action="dead_lettered") == len(offsets)
    async with Committed(broker, topics) as committed:
        await committed.settles_at(offsets[-1] + 3 + 10)


async def test_a_corrupt_batch_and_one_that_does_not_decompress_are_dead_lettered_nothing_else_lost(
    broker: EmbeddedBroker, node: NodeServer, workdir: Path
) -> None:
    topics = Topics.fresh()
    await topics.create(broker, 2)
    offsets = await layout(broker, topics, corrupt, not_gzip)
    bridge = start(broker, topics, node, workdir)
    try:
        await until(lambda: set(seqs(node)) == set(range(30)) | set(range(100, 130)), 30, bridge.output)
        await dead_lettered(broker, topics, bridge, offsets, ["CorruptRecord", "gzip"])
        assert bridge.status("/readyz") == 200
        assert len(seqs(node)) == 60  # what preceded a bad batch was not sent twice
    finally:
        bridge.stop()


async def test_a_codec_the_bridge_cannot_read_loses_nothing_on_other_partitions(
    broker: EmbeddedBroker, node: NodeServer, workdir: Path
) -> None:
    """The field's case: a Java producer's lz4 and zstd batches, met by a bridge without those codecs
    (as before cramjam). They used to take records of healthy partitions with them."""

    topics = Topics.fresh()
    await topics.create(broker, 2)
    # Partition 0: 0-9, lz4 (3 records), 10-19, zstd (3), 20-29: the bad batches sit at 10 and 23.
    await produce_to(broker, topics.node, {0: range(0, 10), 1: range(100, 110)})
    await produce_to(broker, topics.node, {0: range(1000, 1003)}, "lz4")
    await produce_to(broker, topics.node, {0: range(10, 20), 1: range(110, 120)})
    await produce_to(broker, topics.node, {0: range(2000, 2003)}, "zstd")
    await produce_to(broker, topics.node, {0: range(20, 30), 1: range(120, 130)})
    bridge = start(broker, topics, node, workdir, **without_cramjam(workdir))
    try:
        await until(lambda: set(seqs(node)) == set(range(30)) | set(range(100, 130)), 30, bridge.output)
        await dead_lettered(broker, topics, bridge, [10, 23], ["UnsupportedCodec", "UnsupportedCodec"])
    finally:
        bridge.stop()


async def test_with_on_undecodable_stop_the_partition_stops_at_the_batch_and_readiness_says_why(
    broker: EmbeddedBroker, node: NodeServer, workdir: Path
) -> None:
    topics = Topics.fresh()
    await topics.create(broker, 2)
    [first, _] = await layout(broker, topics, corrupt, not_gzip)
    bridge = start(broker, topics, node, workdir, RESONANCE_ON_UNDECODABLE="stop")
    try:
        before = set(range(10)) | set(range(100, 130))
        await until(lambda: set(seqs(node)) >= before, 30, bridge.output)
        await until(lambda: bridge.status("/readyz") == 503, 10, bridge.readyz)
        assert f"{topics.node}/0/{first}-{first + 2}" in bridge.readyz()
        await asyncio.sleep(1)  # what follows the batch on its partition is not read
        assert set(seqs(node)) == before
        assert bridge.metric("resonance_undecodable_batches_total", action="stopped") == 1
        async with Committed(broker, topics) as committed:
            await committed.settles_at(first)
        assert await consume(broker, topics.deadletter, 0, timeout=1) == []
        assert "RESONANCE_ON_UNDECODABLE=stop" in bridge.output()
    finally:
        bridge.stop()
