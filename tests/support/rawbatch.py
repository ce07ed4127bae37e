"""Record batches no well-behaved producer writes, stored in the broker's log as they are: one whose
CRC does not match, and one whose compressed payload does not decompress. A Produce request carries a
batch's bytes verbatim, so the broker keeps them and every consumer meets them. (A codec id Kafka
does not define is refused by the broker; a codec the consumer cannot decode is met by a bridge
without cramjam: `without_cramjam`.)"""

from __future__ import annotations

import struct
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from resonance_local.embedded import EmbeddedBroker

# The v2 batch header (KIP-98): baseOffset 8, batchLength 4, leaderEpoch 4, magic 1, crc 4, then the
# attributes (int16) from which the CRC is computed.
_CRC_AT, _ATTRIBUTES_AT = 17, 21
GZIP = 1  # the codec ids: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd


def batch(values: list[bytes], codec_id: int | None = None, bad_crc: bool = False) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i, value in enumerate(values):
        builder.append(i, timestamp=None, key=None, value=value, headers=[])
    raw = bytearray(builder.build())
    if codec_id is not None:  # the records stay as they are: not what that codec would read
        (attributes,) = struct.unpack_from(">h", raw, _ATTRIBUTES_AT)
        struct.pack_into(">h", raw, _ATTRIBUTES_AT, (attributes & ~7) | codec_id)
    struct.pack_into(">I", raw, _CRC_AT, calc_crc32c(bytes(raw[_ATTRIBUTES_AT:])))
    if bad_crc:
        raw[-1] ^= 0xFF  # after the CRC was computed: the stored CRC no longer matches
    return bytes(raw)


async def write_raw(broker: EmbeddedBroker, topic: str, partition: int, raw: bytes) -> int:
    """Store a batch's bytes as they are; returns its base offset."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.client.force_metadata_update()
        leader = producer.client.cluster.leader_for_partition(TopicPartition(topic, partition))
        request = ProduceRequest(None, -1, 10_000, [(topic, [(partition, raw)])])
        response = await producer.client.send(leader, request)
        [(_, [(_, error, offset, *_)])] = response.topics
        assert error == 0, f"the broker refused the raw batch: error {error}"
        return int(offset)
    finally:
        await producer.stop()


def without_cramjam(folder: Path) -> dict[str, str]:
    """A bridge's environment in which `import cramjam` fails, as it did before the project depended
    on it: aiokafka then raises UnsupportedCodecError on snappy, lz4 and zstd batches."""
    shim = folder / "no-cramjam" / "cramjam"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text('raise ImportError("cramjam is hidden from this bridge")\n')
    return {"PYTHONPATH": str(shim.parent)}
