"""The consumer side of the bridge: reads the node's topic, and commits exactly what the in-flight
window says is done (never more)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from .backoff import Retry
from .window import Partition, Window

log = logging.getLogger("resonance.reader")

# A commit waits at most this long on the rebalance path: the broker may be the thing that is gone.
REVOKE_COMMIT_S = 5.0


class KafkaReader(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer, window: Window, topic: str, retry: Retry) -> None:
        self.consumer = consumer
        self.window = window
        self.retry = retry  # the consumer's: a failing fetch shows in /readyz like a failing start
        consumer.subscribe([topic], listener=self)

    async def fetch(self, max_records: int) -> dict[Any, list[Any]]:
        """The next batch; a broker error is retried here, not a reason to drop the node."""
        try:
            batch: dict[Any, list[Any]] = await self.consumer.getmany(timeout_ms=500, max_records=max_records)
        except KafkaError as exc:
            await self.retry.failed(exc)
            return {}
        if self.retry.failure is not None:
            self.retry.succeeded()
        return batch

    async def commit(self) -> None:
        """Commit what moved; marked committed only once Kafka confirmed, so a commit that fails or
        is cancelled (shutdown, rebalance) is simply made again by the next one."""
        assigned = self.consumer.assignment()
        due = {p: o for p, o in self.window.due_commits().items() if TopicPartition(*p) in assigned}
        if not due:
            return
        try:
            await self.consumer.commit({TopicPartition(*p): o for p, o in due.items()})
        except KafkaError as exc:
            log.warning("offset commit failed (%s); will retry", exc)
            return
        self.window.confirmed(due)

    def seek(self, resume: dict[Partition, int]) -> None:
        """Fetch again from these offsets: what a session had in flight when it ended. No request
        and no wait, so a session ends at once even while the broker is unreachable."""
        assigned = self.consumer.assignment()
        for (topic, partition), offset in resume.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                self.consumer.seek(tp, offset)

    async def lag(self) -> int:
        """Records in the assigned partitions that are not done yet."""
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
        # Hand over what is done before another consumer takes over; bounded, because a rebalance
        # may be the broker's doing and what is not committed is only redelivered.
        try:
            await asyncio.wait_for(self.commit(), REVOKE_COMMIT_S)
        except TimeoutError:
            log.warning("commit on rebalance timed out; the next owner redelivers from the last commit")
        self.window.revoke({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass
