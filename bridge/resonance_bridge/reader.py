"""The consumer side of the bridge: reads the node's topic, and commits exactly what the in-flight
window says is done (never more).

Whatever a fetch raises, no record is skipped: every partition it read goes back to the first
record not yet handed over. A batch that cannot be decoded (batches.py) holds back only its own
partition: the records before it are handed over one at a time, then the partition is paused and
the batch handed over as Undecodable, to be dead-lettered (the partition moves past it once the
dead letter is stored) or, with RESONANCE_ON_UNDECODABLE=stop, to stop there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from . import kafka
from .backoff import Retry
from .batches import Failure, Fetched, Undecodable, decoding_failure
from .config import Config
from .progress import Progress
from .window import Partition, Window

log = logging.getLogger("resonance.reader")

# A commit waits at most this long on the rebalance path: the broker may be the thing that is gone.
REVOKE_COMMIT_S = 5.0
# How long a fetch waits for records when nothing is ready (ms).
FETCH_WAIT_MS = 500
# How long a fetch with no partition to read waits before the session asks again (s).
IDLE_S = 0.05


class KafkaReader(ConsumerRebalanceListener):  # type: ignore[misc]
    """Subscribed as a member of the group (KAFKA_ASSIGNMENT=group: replicas share the partitions),
    or assigned every partition of the topic at once (direct: one replica; no join, which takes
    seconds on Kafka). Both commit to the group, so a restart resumes where the acks left off."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        window: Window,
        config: Config,
        retry: Retry,
        on_undecodable: Callable[[Undecodable, bool], None] | None = None,
        factory: Callable[[], AIOKafkaConsumer] | None = None,
    ) -> None:
        self.consumer = consumer
        self.factory = factory  # a consumer that failed for good is replaced by a new one
        # A consumer asked for records that completes no fetch for the request timeout and 5 s more
        # is stalled (progress.py).
        self.progress = Progress(config.request_timeout_ms / 1000 + 5.0)
        self.window = window
        self.topic = config.topic
        self.retry = retry  # the consumer's: a failing fetch shows in /readyz like a failing start
        self.direct = config.assignment == "direct"
        self.stop_on_undecodable = config.on_undecodable == "stop"
        self.on_undecodable = on_undecodable or (lambda batch, stopped: None)
        # Partitions whose records before a batch that failed to decode are read one at a time.
        self.stepping: dict[TopicPartition, Failure] = {}
        # Paused at an undecodable batch: until its dead letter is stored, or for good (stop).
        self.held: dict[TopicPartition, Undecodable] = {}
        self.stopped: dict[TopicPartition, Undecodable] = {}
        self.before_fetch: Callable[[KafkaReader], Awaitable[None]] | None = None
        if not self.direct:
            consumer.subscribe([self.topic], listener=self)

    async def assign(self) -> None:
        """Direct: take every partition the metadata knows, those already held kept at their
        positions (a topic given more partitions gets them read without a restart)."""
        # Tracked by aiokafka's client as a subscription would (consumer.topics() leaves its
        # metadata as it was), and asked for now: one topic's metadata, every probe.
        client = self.consumer._client
        await client.add_topic(self.topic)
        if not await client.force_metadata_update():  # False, not an error, when no broker answers
            raise KafkaConnectionError(f"no broker answered a metadata request for {self.topic}")
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

    async def fetch(self, max_records: int) -> Fetched:
        """The next records; a broker error is retried here, not a reason to drop the node."""
        fetched = Fetched()
        before: dict[TopicPartition, int] = {}
        self.progress.asked()
        try:
            if self.direct and not self.consumer.assignment():
                await self.assign()
            if self.before_fetch is not None:  # a replay asked for (replay.py)
                await self.before_fetch(self)
            self._release()
            before = self._positions(list(self.consumer.assignment()))
            if self.stepping:
                await self._step(fetched, max_records)
            room = max_records - len(fetched)
            others = [tp for tp in self.consumer.assignment() if tp not in self.stepping]
            if room > 0 and others:
                wait = 0 if len(fetched) else FETCH_WAIT_MS
                fetched.records |= await self.consumer.getmany(*others, timeout_ms=wait, max_records=room)
            elif not len(fetched):  # nothing to read yet (a group join, a stepping partition): no spin
                await asyncio.sleep(IDLE_S)
        except BaseException as exc:
            # getmany() may raise after draining other partitions: whatever raised, every partition
            # goes back to where this fetch found it, so nothing drained here is skipped.
            self._restore(before, fetched)
            failure = decoding_failure(exc) if isinstance(exc, Exception) else None
            if failure is not None and failure.tp in before:
                what = "partition %s: %s; reading up to that batch a record at a time"
                log.warning(what, failure.tp, failure.error)
                self.stepping[failure.tp] = failure
                return Fetched()
            if isinstance(exc, KafkaError):
                await self.retry.failed(exc)
                if not exc.retriable and self.factory is not None:
                    await self._replace(exc)
                return Fetched()
            raise
        if self.retry.failure is not None:
            self.retry.succeeded()
        if len(fetched):
            self.progress.made()
        for batch in fetched.undecodable:
            self.on_undecodable(batch, False)
        for batch in fetched.stopped:
            self.on_undecodable(batch, True)
        return fetched

    async def _step(self, fetched: Fetched, max_records: int) -> None:
        """A record at a time, what precedes each stepping partition's failed batch; then the batch."""
        alone = len(self.stepping) == len(self.consumer.assignment())  # nothing else to wait on
        for tp, failure in list(self.stepping.items()):
            while len(fetched) < max_records:
                position = self._positions([tp]).get(tp)
                if position is None:
                    break
                if failure.last is not None and position > failure.last:
                    del self.stepping[tp]  # it decoded after all
                    break
                wait = 100 if alone and not len(fetched) else 0
                try:
                    got = await self.consumer.getmany(tp, timeout_ms=wait, max_records=1)
                except Exception as exc:
                    again = decoding_failure(exc)
                    if again is None or again.tp != tp:
                        raise
                    del self.stepping[tp]
                    self._hold(tp, position, again, fetched)
                    break
                if not got:
                    break
                for part, records in got.items():
                    fetched.records.setdefault(part, []).extend(records)

    async def _replace(self, exc: KafkaError) -> None:
        """A consumer in a state it does not leave (its group coordination ended with an error that
        getmany() raises for ever) is replaced. What it had in flight is revoked, to be fetched
        again from the last commit by the new one: duplicates, never loss."""
        assert self.factory is not None
        old = self.consumer
        log.error("kafka consumer failed for good (%s: %s); replacing it", type(exc).__name__, exc)
        self._forget(old.assignment() | set(self.stepping) | set(self.held) | set(self.stopped))
        await kafka.bounded(old.stop(), "failed kafka consumer close", 2.0)
        new = await kafka.start_with_retry(self.factory, self.retry)
        if new is None:
            return  # stopping
        self.consumer = new
        self.progress.made()
        if not self.direct:
            new.subscribe([self.topic], listener=self)

    def _forget(self, partitions: set[TopicPartition]) -> None:
        """Partitions no longer this consumer's: their records and undecodable batches are not ours."""
        for tp in partitions:
            self.stepping.pop(tp, None)
            self.held.pop(tp, None)
            self.stopped.pop(tp, None)
        self.window.revoke({(tp.topic, tp.partition) for tp in partitions})

    def stalled(self) -> str | None:
        return self.progress.stalled(self.consumer)

    def _hold(self, tp: TopicPartition, position: int, failure: Failure, fetched: Fetched) -> None:
        """Pause the partition at the batch, handed over to be dead-lettered or (stop) kept there. A
        batch whose header did not parse is passed one offset at a time."""
        first = failure.first if failure.first is not None else position
        last = failure.last if failure.last is not None else position
        batch = Undecodable(tp.topic, tp.partition, position, first, last, failure.error)
        self.consumer.pause(tp)
        if self.stop_on_undecodable:
            self.stopped[tp] = batch
            fetched.stopped.append(batch)
        else:
            self.held[tp] = batch
            fetched.undecodable.append(batch)

    def _release(self) -> None:
        """A held partition whose dead letter is stored moves past its batch; one no longer ours is
        forgotten."""
        assigned = self.consumer.assignment()
        for tp, batch in list(self.held.items()):
            if tp not in assigned:
                del self.held[tp]
            elif self.window.committable.get((tp.topic, tp.partition), -1) > batch.last:
                self.consumer.seek(tp, batch.last + 1)
                self.consumer.resume(tp)
                del self.held[tp]
        for tp in [tp for tp in self.stopped if tp not in assigned]:
            del self.stopped[tp]

    def _positions(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where each partition reads next, read from aiokafka's assignment state (its position() is
        a coroutine that waits while the position is unknown; such a partition has handed nothing over)."""
        assignment = getattr(self.consumer._subscription.subscription, "assignment", None)
        positions = {}
        for tp in partitions:
            state = assignment.state_value(tp) if assignment is not None else None
            if state is not None and state.has_valid_position:
                positions[tp] = state.position
        return positions

    def _restore(self, positions: dict[TopicPartition, int], fetched: Fetched) -> None:
        """Undo a fetch: positions back, and the batches it held met again later."""
        assigned = self.consumer.assignment()
        for batch in fetched.undecodable + fetched.stopped:
            tp = TopicPartition(batch.topic, batch.partition)
            self.held.pop(tp, None)
            self.stopped.pop(tp, None)
            if tp in assigned:
                self.consumer.resume(tp)
        for tp, offset in positions.items():
            if tp in assigned:
                self.consumer.seek(tp, offset)

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
                if self.held.pop(tp, None) is not None:  # its dead letter was not stored: met again
                    self.consumer.resume(tp)

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
        self._forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass
