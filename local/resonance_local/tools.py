"""`resonance send` and `resonance tail`: put a guide-format message on a topic, watch a topic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from resonance_bridge import codec

TYPES = {
    "state": "state_update",
    "sync": "frequency_sync",
    "repo": "repository_event",
    "heartbeat": "heartbeat",
}
TEXT_TYPES = frozenset({"state", "repo"})  # the kinds with a place for --message


def build(kind: str, message: str, anchor: str, frequency: float, s_roi: float) -> dict[str, Any]:
    """A well-formed message of the guide's format; `message` lands where the guide puts text."""
    if kind == "state":
        data = {"frequency": frequency, "s_roi": s_roi, "status": "operational"}
        if message:
            data["message"] = message
        return {"type": "state_update", "timestamp": codec.now_iso(), "anchor": anchor, "data": data}
    if kind == "sync":
        return codec.frequency_sync(anchor, frequency, s_roi)
    if kind == "repo":
        return {
            "type": "repository_event",
            "timestamp": codec.now_iso(),
            "event_type": "commit",
            "data": {
                "sha": f"{time.time_ns():x}"[-12:],
                "message": message or "Update",
                "author": "resonance",
            },
            "source": "resonance",
        }
    return codec.heartbeat(anchor, frequency, s_roi)


# A message Kafka refuses with a retriable error is sent again, this many times in all, with backoff.
SEND_ATTEMPTS = 6


class Unreachable(Exception):
    """No Kafka at the bootstrap servers given: said in one line, with what to do."""


async def _started(client: AIOKafkaProducer | AIOKafkaConsumer, bootstrap: str, command: str) -> None:
    # A one-shot tool says what failed itself, in one line: the client's own retry log is noise here.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        await client.start()
    except KafkaError as exc:
        await client.stop()
        raise Unreachable(
            f"resonance {command}: no Kafka answers at {bootstrap} ({exc}): start one with "
            "`resonance broker`, or name yours with --bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS"
        ) from None


def _producer(bootstrap: str) -> AIOKafkaProducer:
    # No idempotence: a one-shot producer gains nothing from it, and some test brokers refuse it.
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5)


async def send(bootstrap: str, topics: list[str], body: dict[str, Any], count: int, anchor: str) -> int:
    """Guide messages, numbered by a `seq` field when there are several."""
    payloads = [codec.encode({**body, "seq": i} if count > 1 else body) for i in range(count)]
    return await _produce(bootstrap, topics, payloads, anchor)


async def send_raw(bootstrap: str, topics: list[str], payload: bytes, count: int, anchor: str) -> int:
    """A payload of the user's, exactly as given (large, or not what the guide defines)."""
    return await _produce(bootstrap, topics, [payload] * count, anchor)


class NotAllSent(Exception):
    """Some messages were not stored: the message says which, and why."""


async def _produce(bootstrap: str, topics: list[str], payloads: list[bytes], anchor: str) -> int:
    """Every payload to every topic, each retried as a producer should (a topic a broker has just
    created answers NotLeaderForPartition until its leader is elected); raises NotAllSent naming
    what Kafka never took."""
    producer = _producer(bootstrap)
    await _started(producer, bootstrap, "send")
    pending = [(t, i, p) for i, p in enumerate(payloads) for t in topics]
    failed: dict[tuple[str, int], BaseException] = {}
    try:
        for attempt in range(SEND_ATTEMPTS):
            futures = [await producer.send(t, p, key=anchor.encode()) for t, _, p in pending]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            failed = {
                (t, i): o for (t, i, _), o in zip(pending, outcomes, strict=True) if isinstance(o, Exception)
            }
            pending = [(t, i, p) for t, i, p in pending if (t, i) in failed]
            retriable = all(isinstance(e, KafkaError) and e.retriable for e in failed.values())
            if not pending or not retriable or attempt == SEND_ATTEMPTS - 1:
                break
            await asyncio.sleep(0.2 * 2**attempt)
    finally:
        await producer.stop()
    total = len(payloads) * len(topics)
    if failed:
        lines = [f"message {i + 1} to {t}: {type(e).__name__}: {e}" for (t, i), e in sorted(failed.items())]
        raise NotAllSent(f"sent {total - len(failed)} of {total}; not sent: " + "; ".join(lines[:10]))
    return total


def render(record: Any) -> str:
    try:
        value: Any = json.loads(record.value) if record.value is not None else None
    except ValueError:
        value = record.value.decode("utf-8", "replace")
    return json.dumps(
        {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key.decode("utf-8", "replace") if record.key else None,
            "headers": {k: v.decode("utf-8", "replace") for k, v in record.headers or ()},
            "value": value,
        }
    )


async def tail(
    bootstrap: str, topic: str, from_beginning: bool, count: int | None, timeout: float | None
) -> int:
    """Print records as JSON lines, without a consumer group (tail never moves anyone's offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await _started(consumer, bootstrap, "tail")
    seen = 0
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.topics()  # refresh metadata once; the topic may be new
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            raise SystemExit(f"resonance tail: topic {topic!r} does not exist (yet): check the name")
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while count is None or seen < count:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        for record in records:
                            if count is not None and seen >= count:
                                break  # counted per record: a batch may hold more than are wanted
                            print(render(record), flush=True)
                            seen += 1
    finally:
        await consumer.stop()
    return seen
