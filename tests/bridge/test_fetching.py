"""The lean record path (fetching.py) against aiokafka's own, on the same bytes: every codec, legacy
batches, a fetch that starts inside a compressed batch, and a corrupt batch. The broker-backed
checks are test_codecs.py and test_undecodable.py, which run through the bridge's consumer."""

from __future__ import annotations

import aiokafka
import pytest
from aiokafka import TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from resonance_bridge import fetching
from resonance_bridge.batches import decoding_failure

TP = TopicPartition("t", 0)
GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4


def v2(base: int, count: int, codec: int = 0) -> bytes:
    builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 10**7)
    for i in range(count):
        value = b'{"type": "state_update", "data": {"seq": %d}}' % (base + i) if i % 5 else None
        builder.append(i, 1_700_000_000_000 + i, b"k%d" % i if i % 2 else None, value, [("h", b"v")])
    raw = bytearray(builder.build())
    raw[0:8] = base.to_bytes(8, "big")  # the base offset is outside the CRC, as a broker sets it
    return bytes(raw)


def legacy(base: int, count: int, magic: int) -> bytes:
    builder = LegacyRecordBatchBuilder(magic, 0, 10**7)
    for i in range(count):
        stamp = 1_700_000_000_000 + i if magic else None  # v0 has no timestamps
        builder.append(base + i, stamp, b"k", b"legacy %d" % (base + i))
    return bytes(builder.build())


def read(data: bytes, lean: bool, offset: int = 0) -> list[tuple[object, ...]]:
    assert fetching.install()
    records = fetcher.MemoryRecords(data)
    values = fetching.LEAN if lean else None
    unpacked = fetcher.PartitionRecords(TP, records, [], offset, None, values, True, 0)
    kept: list[tuple[object, ...]] = []
    for r in unpacked:
        assert lean == (not hasattr(r, "topic"))  # the lean path hands over aiokafka's C records
        kept.append((r.offset, r.timestamp, r.timestamp_type, r.key, r.value, list(r.headers)))
    return kept


def test_the_lean_path_is_installed_on_the_aiokafka_it_was_written_for() -> None:
    """Fails when aiokafka moves past the versions fetching.SUPPORTED names: read its fetcher again."""
    assert aiokafka.__version__.startswith(fetching.SUPPORTED), aiokafka.__version__
    assert fetching.install() and fetcher.PartitionRecords is fetching.LeanPartitionRecords


@pytest.mark.parametrize("codec", [0, GZIP, SNAPPY, LZ4, ZSTD], ids=["none", "gzip", "snappy", "lz4", "zstd"])
def test_every_codec_reads_as_aiokafka_reads_it(codec: int) -> None:
    data = v2(0, 300, codec) + v2(300, 1, codec) + v2(301, 250, codec)
    lean = read(data, lean=True)
    assert lean == read(data, lean=False)
    assert [r[0] for r in lean] == list(range(551))


def test_legacy_batches_and_a_fetch_inside_a_compressed_batch_read_as_aiokafka_reads_them() -> None:
    # aiokafka reads a buffer as of one format (the first batch's): legacy and v2 apart.
    data = legacy(0, 10, 0) + legacy(10, 10, 1) + legacy(20, 10, 1)
    for offset in (0, 5, 25):
        lean = read(data, lean=True, offset=offset)
        assert lean and lean == read(data, lean=False, offset=offset)
    # A fetch at an offset inside a compressed batch gets that whole batch (and those after it).
    for offset, data in (
        (0, v2(0, 30, GZIP) + v2(30, 20, LZ4)),
        (25, v2(0, 30, GZIP) + v2(30, 20, LZ4)),
        (40, v2(30, 20, LZ4)),
    ):
        lean = read(data, lean=True, offset=offset)
        assert lean == read(data, lean=False, offset=offset)
        assert [r[0] for r in lean] == list(range(offset, 50))


def test_a_drain_cut_short_by_max_records_goes_on_where_it_stopped() -> None:
    data = v2(0, 30, GZIP) + v2(30, 20)
    for lean in (True, False):
        records = fetcher.MemoryRecords(data)
        values = fetching.LEAN if lean else None
        unpacked = fetcher.PartitionRecords(TP, records, [], 0, None, values, True, 0)
        result = fetcher.FetchResult(TP, partition_records=unpacked, assignment=_Assigned(), backoff=0)
        drained: list[int] = []
        while result.has_more():
            drained += [r.offset for r in result.getall(max_records=7)]
        assert drained == list(range(50)), lean


def test_a_corrupt_batch_raises_as_aiokafka_does_and_is_placed_by_its_offsets() -> None:
    good, bad, after = v2(0, 10), bytearray(v2(10, 10)), v2(20, 10)
    bad[-3] ^= 0xFF  # a record's byte: inside the CRC
    data = good + bytes(bad) + after
    for lean in (True, False):
        records = fetcher.MemoryRecords(data)
        values = fetching.LEAN if lean else None
        unpacked = fetcher.PartitionRecords(TP, records, [], 0, None, values, True, 0)
        result = fetcher.FetchResult(TP, partition_records=unpacked, assignment=_Assigned(), backoff=0)
        with pytest.raises(CorruptRecordException) as raised:
            result.getall()
        failure = decoding_failure(raised.value)
        assert failure is not None and (failure.tp, failure.first, failure.last) == (TP, 10, 19), lean


class _Assigned:
    """What FetchResult asks of the assignment: the partition is still ours."""

    active = True

    def __init__(self) -> None:
        self.state = _State()

    def state_value(self, tp: TopicPartition) -> _State:
        return self.state


class _State:
    paused = False
    position = 0

    def consumed_to(self, offset: int) -> None:
        self.position = offset
