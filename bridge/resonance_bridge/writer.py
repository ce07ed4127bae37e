"""Everything the bridge writes to Kafka goes through one KafkaWriter: acks=all, keyed by the node's
anchor, retried with backoff until stored. A record is never given up on while the bridge runs."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from . import codec, kafka
from .backoff import Backoff
from .codec import Rejected
from .config import Config

log = logging.getLogger("resonance.writer")


@dataclass(slots=True)
class Reply:
    """An inbound frame on its way to Kafka, and what to tell the node once Kafka has it."""

    future: asyncio.Future[Any]
    topic: str
    value: bytes
    headers: kafka.Headers
    answer: bytes  # the frame to send the node: an ack, or an error
    size: int  # bytes of the node's frame, held until the answer is sent
    error: str | None = None  # the dead-letter reason, when the answer is an error
    detail: str = ""  # why, for the log, when the answer is an error


class KafkaWriter:
    def __init__(self, config: Config, producer: AIOKafkaProducer) -> None:
        self.config = config
        self.producer = producer
        self.key = config.anchor.encode()
        # Headers and ack per known message type, built once: the inbound hot path only looks them up.
        self._per_type: dict[str, tuple[kafka.Headers, bytes]] = {}

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
        """Produce and wait until Kafka acknowledged, retrying forever with backoff."""
        backoff = Backoff()
        while True:
            try:
                await self.producer.send_and_wait(topic, value, key=self.key, headers=headers)
                return
            except KafkaError as exc:
                delay = backoff.next_delay()
                log.warning("kafka refused a record for %s (%s); retrying in %.1fs", topic, exc, delay)
                await asyncio.sleep(delay)

    async def dead_letter(self, rejected: Rejected, direction: str, **extra: str) -> None:
        value, headers = kafka.dead_letter(self.config, rejected, direction, **extra)
        await self.store(self.config.deadletter_topic, value, headers)

    async def request(self, frame: codec.Message | Rejected) -> Reply:
        """Start storing one frame from the node: a message to the inbound topic, a bad frame to the
        dead-letter topic; the Reply says what to answer once it is stored."""
        if isinstance(frame, Rejected):
            value, headers = kafka.dead_letter(self.config, frame, "inbound")
            topic = self.config.deadletter_topic
            future = await self.send(topic, value, headers)
            answer = codec.encode(codec.error(frame))
            return Reply(future, topic, value, headers, answer, len(frame.raw), frame.reason, frame.detail)
        headers, answer = self._per_type.get(frame.type) or self._build(frame.type, frame.known)
        if frame.id is not None:
            answer = codec.encode(codec.ack(frame.type, frame.id))
        topic = self.config.inbound_topic
        future = await self.send(topic, frame.raw, headers)
        return Reply(future, topic, frame.raw, headers, answer, len(frame.raw))

    def _build(self, mtype: str, known: bool) -> tuple[kafka.Headers, bytes]:
        built = kafka.headers(self.config, **{"resonance-type": mtype}), codec.encode(codec.ack(mtype))
        if known:  # a node inventing types must not grow this cache without bound
            self._per_type[mtype] = built
        return built

    async def settle(self, reply: Reply) -> None:
        """Wait until Kafka stored the reply's record; retry it if the broker failed; a record Kafka
        refuses for its size is dead-lettered instead and the node told so."""
        try:
            await reply.future
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
            rejected = Rejected("kafka_rejected", f"Kafka refused the record: {exc}", reply.value)
            await self.dead_letter(rejected, "inbound")
            reply.answer, reply.error = codec.encode(codec.error(rejected)), rejected.reason
            reply.detail = rejected.detail
        except KafkaError:
            await self.store(reply.topic, reply.value, reply.headers)
