"""The lean path from a fetched record batch to the relay, for the node's consumer only.

aiokafka decodes each fetched partition in PartitionRecords: it checks every batch's CRC-32C in its
Cython extension, a table lookup per byte (1.2 us for a 1 KB record), and wraps each record in a
ConsumerRecord dataclass (0.7 us more), for about a sixth of the bridge's CPU per message. A
consumer made with `value_deserializer=LEAN` (kafka.consumer()) gets, from the same fetches:
  - each batch's CRC-32C checked by google-crc32c, with the CPU's CRC32 instruction (0.1 us, copy included);
  - aiokafka's own C records (offset, timestamp, key, value, headers; the topic and partition are
    the batch's key), not ConsumerRecords.
Everything else stays aiokafka's: fetch requests, positions, control batches, aborted
transactions (the loop below is aiokafka 0.14's, with only those two changes), errors, and a
batch that cannot be decoded (batches.py reads this frame as it reads aiokafka's). Other consumers
in the process are not affected. aiokafka has no public hook for this: install() replaces two
names in its fetcher module, and only on the aiokafka line it was written against (else it logs
and leaves aiokafka as it is: correct, slower).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from typing import Any

import aiokafka
import google_crc32c
from aiokafka import errors
from aiokafka.consumer import fetcher

log = logging.getLogger("resonance.reader")

SUPPORTED = ("0.14.",)  # the fetcher module the loop below was copied from
_BATCH_HEAD = struct.Struct(">qi")  # baseOffset, batchLength; the CRC covers attributes on
_MAGIC, _CRC_FROM = 16, 21


def LEAN(value: bytes | None) -> bytes | None:  # a marker, passed as a deserializer
    """The value as it is; as the consumer's value_deserializer it selects the lean path."""
    return value


class RawMemoryRecords:
    """aiokafka's MemoryRecords, keeping the fetched bytes so that each batch's CRC can be checked."""

    __slots__ = ("raw", "records")

    def __init__(self, data: bytes) -> None:
        self.raw, self.records = data, _MEMORY_RECORDS(data)

    def has_next(self) -> bool:
        return bool(self.records.has_next())

    def next_batch(self) -> Any:
        return self.records.next_batch()

    def size_in_bytes(self) -> int:
        return int(self.records.size_in_bytes())


_MEMORY_RECORDS: Any = fetcher.MemoryRecords
_PARTITION_RECORDS: Any = fetcher.PartitionRecords


class LeanPartitionRecords(_PARTITION_RECORDS):  # type: ignore[misc]
    def __init__(self, tp: Any, records: Any, aborted: Any, offset: int, keys: Any, values: Any, *rest: Any):
        self._lean = values is LEAN and isinstance(records, RawMemoryRecords)
        super().__init__(tp, records, aborted, offset, keys, None if self._lean else values, *rest)

    def __iter__(self) -> Iterator[Any]:
        # The generator itself: FetchResult.getall()'s loop resumes it directly, not through
        # __next__ (a Python call per record). A loop cut short by max_records resumes it later.
        return self._records_iterator if self._lean and self._records_iterator is not None else self

    def _unpack_records(self) -> Iterator[Any]:  # the name batches.decoding_failure looks for
        if not self._lean:
            yield from super()._unpack_records()
            return
        tp, records = self._tp, self._records
        raw, at = records.raw, 0
        while records.has_next():
            next_batch = records.next_batch()
            base, length = _BATCH_HEAD.unpack_from(raw, at)
            size, start = 12 + length, at
            at += size
            if self._check_crcs and not _crc_ok(next_batch, raw, start, size, base):
                # This iterator will be closed after the exception, so we don't
                # try to drain other batches here. They will be refetched.
                raise errors.CorruptRecordException(f"Invalid CRC - {tp}")

            if self._isolation_level == fetcher.READ_COMMITTED and next_batch.producer_id is not None:
                self._consume_aborted_up_to(next_batch.base_offset)
                if next_batch.is_control_batch and self._contains_abort_marker(next_batch):
                    self._aborted_producers.discard(next_batch.producer_id)
                if next_batch.is_transactional and next_batch.producer_id in self._aborted_producers:
                    self.next_fetch_offset = next_batch.next_offset
                    continue

            # We skip control batches no matter the isolation level
            if next_batch.is_control_batch:
                self.next_fetch_offset = next_batch.next_offset
                continue

            for record in next_batch:
                if record.offset < self.next_fetch_offset:
                    continue  # a compressed batch fetched from before its start
                self.next_fetch_offset = record.offset + 1
                yield record
            self.next_fetch_offset = next_batch.next_offset


def _crc_ok(batch: Any, raw: bytes, start: int, size: int, base: int) -> bool:
    # A legacy batch (magic 0 or 1, at the same place) has a CRC-32 of its own per message.
    if raw[start + _MAGIC] < 2 or batch.base_offset != base:
        return bool(batch.validate_crc())
    crc = google_crc32c.value(raw[start + _CRC_FROM : start + size])  # a copy: it takes no view
    return bool(crc == batch.crc)


def install() -> bool:
    """Route lean consumers' fetches through LeanPartitionRecords; False where aiokafka is not a
    version this was written against, or google-crc32c has only its pure-Python fallback."""
    if fetcher.PartitionRecords is LeanPartitionRecords:
        return True
    if not aiokafka.__version__.startswith(SUPPORTED):
        log.info("aiokafka %s: records take aiokafka's own path", aiokafka.__version__)
        return False
    if google_crc32c.implementation != "c":
        log.info("google-crc32c without its C extension: records take aiokafka's own path")
        return False
    fetcher.MemoryRecords = RawMemoryRecords
    fetcher.PartitionRecords = LeanPartitionRecords
    return True
