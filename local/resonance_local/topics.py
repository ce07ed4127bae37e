"""`resonance topics`: what the guide's `kafka-topics --list` and its Kafka UI showed (topics,
message counts, consumer lag), from any Kafka, without a consumer group of its own."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from .tools import _started


@dataclass
class Topic:
    name: str
    partitions: int
    records: int  # held now: end offsets minus beginning offsets
    lag: dict[str, int] = field(default_factory=dict)  # group -> records past its committed offsets


async def topics(bootstrap: str, groups: list[str]) -> list[Topic]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=1,
    )
    await _started(consumer, bootstrap, "topics")
    try:
        names = sorted(t for t in await consumer.topics() if not t.startswith("__"))
        parts = {
            n: [TopicPartition(n, p) for p in sorted(consumer.partitions_for_topic(n) or ())] for n in names
        }
        tps = [tp for n in names for tp in parts[n]]
        begin, end = await _bounds(consumer, tps)
        found = [Topic(n, len(parts[n]), sum(end[tp] - begin[tp] for tp in parts[n])) for n in names]
        for group in groups:
            await _lags(bootstrap, group, found, end)
    finally:
        await consumer.stop()
    return found


async def _bounds(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Each partition's first offset and its high watermark, as a fetch response gives it (some
    brokers answer ListOffsets for the latest offset with less)."""
    begin = await consumer.beginning_offsets(tps) if tps else {}
    end = dict(await consumer.end_offsets(tps)) if tps else {}
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, max(begin[tp], end[tp] - 1))
    deadline = asyncio.get_running_loop().time() + 5
    while any(consumer.highwater(tp) is None for tp in tps) and asyncio.get_running_loop().time() < deadline:
        await consumer.getmany(timeout_ms=100, max_records=1)
    for tp in tps:
        end[tp] = max(end[tp], consumer.highwater(tp) or 0)
    return begin, end


async def _lags(bootstrap: str, group: str, found: list[Topic], end: dict[TopicPartition, int]) -> None:
    """A group's lag on each topic it has committed offsets for (OffsetFetch: it joins nothing)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await _started(reader, bootstrap, "topics")
    try:
        for topic in found:
            tps = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
            committed = {tp: await reader.committed(tp) for tp in tps}
            if any(offset is not None for offset in committed.values()):
                topic.lag[group] = sum(max(0, end[tp] - (committed[tp] or 0)) for tp in tps)
    finally:
        await reader.stop()


def table(found: list[Topic]) -> str:
    rows = [("TOPIC", "PARTITIONS", "RECORDS", "GROUP", "LAG")]
    for t in found:
        lags = [(group, str(lag)) for group, lag in sorted(t.lag.items())] or [("-", "-")]
        for i, (group, lag) in enumerate(lags):
            first = (t.name, str(t.partitions), str(t.records)) if i == 0 else ("", "", "")
            rows.append((*first, group, lag))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def as_json(found: list[Topic]) -> str:
    return json.dumps([asdict(t) for t in found], indent=2)
