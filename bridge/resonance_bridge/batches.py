"""What one fetch hands over, and a record batch aiokafka cannot decode: which partition and offsets.

aiokafka decodes a partition's batches lazily, while getmany() drains them, and raises whatever the
decoding raised (UnsupportedCodecError for a codec it cannot decode, CorruptRecordException for a
CRC mismatch, a decompressor's own error for a corrupt payload) without naming the partition. Its
own frames in the traceback do: the draining FetchResult knows its partition, and the decoding
generator holds the batch it was reading, whose header (offsets, codec) parsed even though its
records did not. Nothing here reads aiokafka's state outside such a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

log = logging.getLogger("resonance.bridge")

# The frames that decode a partition's records (aiokafka.consumer.fetcher).
_DRAIN, _DECODE = "getall", "_unpack_records"


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A batch that cannot be decoded. `offset` is the first offset not yet handed over on its
    partition (where a rewind goes back to); `first`..`last` are the batch's own offsets."""

    topic: str
    partition: int
    offset: int
    first: int
    last: int
    error: str

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.first}-{self.last}"

    def headers(self) -> dict[str, str]:
        """What the dead letter says of the batch, beside the reason and the error."""
        return {
            "resonance-source": self.source,
            "resonance-partition": str(self.partition),
            "resonance-first-offset": str(self.first),
            "resonance-last-offset": str(self.last),
        }


@dataclass(slots=True)
class Fetched:
    """What one fetch hands over: records by partition, and batches that could not be decoded."""

    records: dict[Any, list[Any]] = field(default_factory=dict)
    undecodable: list[Undecodable] = field(default_factory=list)  # to dead-letter
    stopped: list[Undecodable] = field(default_factory=list)  # stopped at (not handed over)

    def __len__(self) -> int:
        return sum(len(records) for records in self.records.values()) + len(self.undecodable)


@dataclass(frozen=True, slots=True)
class Failure:
    """Where a decoding error came from: the partition, and the batch when its header parsed."""

    tp: TopicPartition
    first: int | None
    last: int | None
    error: str


def decoding_failure(exc: BaseException) -> Failure | None:
    """The partition (and batch) whose decoding raised `exc`; None for an error that did not come
    from decoding records (a broker's error code, the consumer stopping)."""
    tp: TopicPartition | None = None
    batch: Any = None
    position: int | None = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        name, local = frame.f_code.co_name, frame.f_locals
        drained = getattr(local.get("self"), "_topic_partition", None)
        if name == _DRAIN and isinstance(drained, TopicPartition):
            tp = drained
        elif name == _DECODE and tp is not None:
            batch = local.get("next_batch")
            position = getattr(local.get("self"), "next_fetch_offset", None)
        tb = tb.tb_next
    if tp is None:
        return None
    error = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    first, following = getattr(batch, "base_offset", None), getattr(batch, "next_offset", None)
    # The batch in the frame is the one that failed only if the reading had not moved past it yet
    # (a batch whose header did not parse leaves the previous batch there).
    if isinstance(first, int) and isinstance(following, int) and (position is None or following > position):
        return Failure(tp, first, following - 1, error)
    return Failure(tp, None, None, error)


def report(batch: Undecodable, stopped: bool) -> str:
    """Log the batch, once; returns what the heartbeat and the node's status say of it."""
    where = f"partition {batch.topic}/{batch.partition} offsets {batch.first}-{batch.last}"
    if stopped:
        log.error(
            "%s cannot be decoded (%s): the partition stops there (RESONANCE_ON_UNDECODABLE=stop); "
            "delete or skip the batch, or set deadLetter, then restart the bridge",
            where,
            batch.error,
        )
        return f"stopped at {where}: {batch.error}"
    log.warning("%s cannot be decoded (%s): dead-lettering it", where, batch.error)
    return f"dead-lettered {where}: {batch.error}"
