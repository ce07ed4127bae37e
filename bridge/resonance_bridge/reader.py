"""The consumer side of the bridge: reads the node's topic, and commits exactly what the in-flight
window says the node acknowledged (never more)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from .window import Window

log = logging.getLogger("resonance.reader")


class KafkaReader(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer, window: Window, topic: str) -> None:
        self.consumer = consumer
        self.window = window
        consumer.subscribe([topic], listener=self)

    async def fetch(self, max_records: int) -> dict[Any, list[Any]]:
        """The next batch; a broker error is logged and retried here, not a reason to drop the node."""
        try:
            batch: dict[Any, list[Any]] = await self.consumer.getmany(timeout_ms=500, max_records=max_records)
        except KafkaError as exc:
            log.warning("fetch failed (%s); retrying", exc)
            await asyncio.sleep(1)
            return {}
        return batch

    async def commit(self) -> None:
        assigned = self.consumer.assignment()
        offsets = {
            tp: offset
            for (topic, partition), offset in self.window.take_commits().items()
            if (tp := TopicPartition(topic, partition)) in assigned
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("offset commit failed (%s); will retry", exc)
            for tp in offsets:
                self.window.committed.pop((tp.topic, tp.partition), None)

    async def rewind(self) -> None:
        """Forget what is in flight and seek back to the first unacked record of each partition."""
        await self.commit()
        assigned = self.consumer.assignment()
        for (topic, partition), offset in self.window.rewind().items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                self.consumer.seek(tp, offset)

    async def lag(self) -> int:
        """Records in the assigned partitions that the node has not acked yet."""
        lag = 0
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)  # from the last fetch: no request, unlike end_offsets()
            if high is not None:
                done = self.window.committable.get((tp.topic, tp.partition))
                lag += max(0, high - (done if done is not None else await self.consumer.position(tp)))
        return lag

    async def reachable(self) -> bool:
        try:
            await asyncio.wait_for(self.consumer.topics(), 5)  # a metadata request: a real round trip
            return True
        except (KafkaError, OSError, TimeoutError):
            return False

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.commit()  # hand over what was acked before another consumer takes over
        self.window.revoke({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass
