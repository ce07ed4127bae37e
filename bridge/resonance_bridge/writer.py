"""Everything the bridge writes to Kafka goes through one KafkaWriter: acks=all, keyed by the node's
name, retried with backoff until stored. A record is never given up on while the bridge runs.

One refusal is not retried: a record Kafka refuses for its size (the broker's message.max.bytes, 1 MB
by default, is below a 1 MiB frame plus headers) would be refused forever. Such a record is
dead-lettered instead, and a dead letter refused for its size is stored with its payload cut until
Kafka takes it: the event is kept, the partition or the node's replies never stall on it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from . import codec, kafka
from .backoff import Failure, Retry
from .batcher import Batcher
from .codec import Rejected
from .config import Config
from .metrics import Metrics

log = logging.getLogger("resonance.writer")
dead_log = logging.getLogger("resonance.deadletters")  # held to one line a minute per kind (logs.py)

TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)
# Frames up to this size go to Kafka in batches (batcher.py); larger ones alone, as few as they are.
BATCHED_BYTES = 64 * 1024
# Dead-letter payload cuts tried in turn when Kafka refuses one for its size: the frame limit, 64 KiB, none.
_CUTS = (None, 64 * 1024, 0)


@dataclass(slots=True)
class Reply:
    """An inbound frame on its way to Kafka, and what to tell the node once Kafka has it."""

    future: asyncio.Future[Any]
    topic: str
    value: bytes
    headers: kafka.Headers
    answer: bytes  # the frame to send the node: an ack, or an error
    size: int  # bytes of the node's frame, held until the answer is sent
    rejected: Rejected | None = None  # why the frame is a dead letter, when it is one
    batched: bool = False  # stored with others (batcher.py): a refusal may be another record's
    arrived: float = 0.0  # monotonic: when the frame was read, for resonance_delivery_seconds

    @property
    def stored(self) -> bool:
        """Kafka has the record: nothing is left to settle."""
        return self.future.done() and not self.future.cancelled() and self.future.exception() is None

    @property
    def error(self) -> str | None:
        return self.rejected.reason if self.rejected else None


class Stopping(Exception):
    """A store given up because the bridge is stopping."""


class KafkaWriter:
    def __init__(self, config: Config, producer: AIOKafkaProducer, stopping: asyncio.Event) -> None:
        self.config = config
        self.producer = producer
        self.stopping = stopping
        self.key = config.node.encode()
        # Headers and ack per known message type, built once: the inbound hot path only looks them up.
        self._per_type: dict[str, tuple[kafka.Headers, bytes]] = {}
        self.batcher = Batcher(producer, config.inbound_topic, self.key)
        # Topics a record is being retried for, and why: readiness says so (a topic that does not
        # exist on a Kafka that does not create topics waits here for ever, acking nothing).
        self.failing: dict[str, str] = {}

    def trouble(self) -> str | None:
        """Why records are not being stored, or None."""
        if not self.failing:
            return None
        return "; ".join(f"cannot store in {topic}: {why}" for topic, why in sorted(self.failing.items()))

    async def close(self) -> None:
        await self.batcher.close()

    async def send(self, topic: str, value: bytes, headers: kafka.Headers) -> asyncio.Future[Any]:
        """Start producing a record; a failure to even enqueue it becomes the future's outcome."""
        try:
            future: asyncio.Future[Any] = await self.producer.send(
                topic, value, key=self.key, headers=headers
            )
        except KafkaError as exc:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        return future

    async def store(self, topic: str, value: bytes, headers: kafka.Headers) -> None:
        """Produce and wait until Kafka acknowledged, retrying forever under the one retry policy.
        A refusal for size (TOO_LARGE) is raised, as no retry can change it; so is a failure once the
        bridge is stopping (Stopping): what is not stored is not acked, and comes again."""

        def failed(failure: Failure) -> None:
            self.failing[topic] = failure.message

        retry = Retry(f"storing a record in {topic}", self.stopping, log, on_failure=failed)
        try:
            while True:
                try:
                    await self.producer.send_and_wait(topic, value, key=self.key, headers=headers)
                    return
                except TOO_LARGE:
                    raise
                except KafkaError as exc:
                    if self.stopping.is_set():
                        raise Stopping(f"not stored in {topic} ({exc}); the bridge is stopping") from exc
                    await retry.failed(exc)
        finally:  # however this store ends (stored, refused for its size, given up): not failing now
            self.failing.pop(topic, None)

    async def dead_letter(self, rejected: Rejected, direction: str, **extra: str) -> None:
        """Store a dead letter; if Kafka refuses it for its size, with its payload cut shorter."""
        for cut in _CUTS:
            value, headers = kafka.dead_letter(self.config, rejected, direction, cut, **extra)
            try:
                await self.store(self.config.deadletter_topic, value, headers)
                return
            except TOO_LARGE as exc:
                log.warning("kafka refused a %d-byte dead letter (%s); cutting its payload", len(value), exc)
        raise AssertionError("unreachable: an empty payload is never too large")

    async def dead_letter_unread(self, close_reason: str) -> str:
        """A frame too large to read (the connection was closed with 1009): its event, bounded.
        Returns the dead letter's reason."""
        rejected = codec.unread_frame(close_reason, self.config.max_frame_bytes)
        unknown = {"resonance-original-size": "unknown"}
        await kafka.bounded(self.dead_letter(rejected, "inbound", **unknown), "dead letter")
        return rejected.reason

    async def request(self, frame: codec.Message | Rejected) -> Reply:
        """Start storing one frame from the node: a message to the inbound topic, a bad frame to the
        dead-letter topic; the Reply says what to answer once it is stored."""
        if isinstance(frame, Rejected):
            value, headers = kafka.dead_letter(self.config, frame, "inbound")
            topic = self.config.deadletter_topic
            future = await self.send(topic, value, headers)
            answer = codec.encode(codec.error(frame))
            return Reply(future, topic, value, headers, answer, len(frame.raw), frame)
        headers, answer = self._per_type.get(frame.type) or self._build(frame.type, frame.known)
        if frame.id is not None:
            answer = codec.encode(codec.ack(frame.type, codec.echoed_id(frame)))
        topic = self.config.inbound_topic
        if len(frame.raw) <= BATCHED_BYTES and (batched := self.batcher.add(frame.raw, headers)) is not None:
            return Reply(batched, topic, frame.raw, headers, answer, len(frame.raw), batched=True)
        # Large: alone (the producer's size checks apply), after what came before it.
        await self.batcher.flushed()
        alone = await self.send(topic, frame.raw, headers)
        return Reply(alone, topic, frame.raw, headers, answer, len(frame.raw))

    def _build(self, mtype: str, known: bool) -> tuple[kafka.Headers, bytes]:
        built = kafka.headers(self.config, **{"resonance-type": mtype}), codec.encode(codec.ack(mtype))
        if known:  # a node inventing types must not grow this cache without bound
            self._per_type[mtype] = built
        return built

    async def settle(self, reply: Reply) -> None:
        """Wait until Kafka stored the reply's record, retrying it if the broker failed. A record
        Kafka refuses for its size is dead-lettered instead (cut to fit) and the node told so."""
        try:
            try:
                await reply.future
            except TOO_LARGE:
                if not reply.batched:
                    raise
                # The batch was refused, maybe for another record of it: this one alone decides.
                await self.store(reply.topic, reply.value, reply.headers)
            except KafkaError:
                await self.store(reply.topic, reply.value, reply.headers)
        except TOO_LARGE as exc:
            rejected = reply.rejected or Rejected(
                "kafka_rejected", f"Kafka refused the record: {exc}", reply.value
            )
            await self.dead_letter(rejected, "inbound")
            reply.answer, reply.rejected = codec.encode(codec.error(rejected)), rejected


def answered(replies: list[Reply], stored: float, metrics: Metrics) -> None:
    """The node was answered, once Kafka stored each (at `stored`, monotonic): count and log them."""
    relayed = sum(reply.error is None for reply in replies)
    metrics.relayed_in.inc(relayed)
    metrics.acks_to_node.inc(relayed)
    for reply in replies:
        if reply.error is None:
            metrics.delivery_in.observe(stored - reply.arrived)
            continue
        metrics.dead_letters.labels("inbound", reply.error).inc()
        detail = reply.rejected.detail if reply.rejected else ""
        what = "frame from the node dead-lettered (%s): %s"
        dead_log.warning(what, reply.error, detail, extra={"direction": "inbound"})
