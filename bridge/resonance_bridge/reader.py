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
    """Subscribed as a member of the group (KAFKA_ASSIGNMENT=group: replicas share the partitions),
    or assigned every partition of the topic at once (direct: one replica; no join, which takes
    seconds on Kafka). Both commit to the group, so a restart resumes where the acks left off."""

    def __init__(
        self, consumer: AIOKafkaConsumer, window: Window, topic: str, retry: Retry, direct: bool = False
    ) -> None:
        self.consumer = consumer
        self.window = window
        self.topic = topic
        self.retry = retry  # the consumer's: a failing fetch shows in /readyz like a failing start
        self.direct = direct
        if not direct:
            consumer.subscribe([topic], listener=self)

    async def assign(self) -> None:
        """Direct: take every partition the metadata knows, those already held kept at their
        positions (a topic given more partitions gets them read without a restart)."""
        # Tracked by aiokafka's client as a subscription would (consumer.topics() leaves its
        # metadata as it was), and asked for now: one topic's metadata, every probe.
        client = self.consumer._client
        await client.add_topic(self.topic)
        await client.force_metadata_update()
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        held = self.consumer.assignment()
        wanted = {TopicPartition(self.topic, p) for p in partitions}
        if not wanted or wanted <= held:
            return
        positions = {tp: await self.consumer.position(tp) for tp in held}
        self.consumer.assign(sorted(wanted | held))
        for tp, offset in positions.items():
            self.consumer.seek(tp, offset)
        if held:
            log.info("topic %s has %d partitions now: reading them all", self.topic, len(wanted))

    async def fetch(self, max_records: int) -> dict[Any, list[Any]]:
        """The next batch; a broker error is retried here, not a reason to drop the node."""
        try:
            if self.direct and not self.consumer.assignment():
                await self.assign()
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
            if self.direct:  # a metadata request: a real round trip
                await asyncio.wait_for(self.assign(), 5)
            else:
                await asyncio.wait_for(self.consumer.topics(), 5)
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
