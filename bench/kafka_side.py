"""The benchmark's Kafka side: one set of client settings for every contender, and the processes
that write and read the topics, each its own process (like bench/wire.py, JSON lines on stdout).

    python bench/kafka_side.py counter --topic T --expect N   # inbound's end: the topic holds N
    python bench/kafka_side.py reader --topic T --expect N    # ceiling: a consumer alone reads N
    python bench/kafka_side.py writer --topic T --count N     # ceiling: the broker alone takes N
    python bench/kafka_side.py paced --topic T --rate R --seconds S   # stamped records for latency
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import clock
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

MAX_FRAME = 1024 * 1024  # the bridge's default RESONANCE_MAX_FRAME_BYTES
# What the bridge sets with the embedded broker's client env (resonance_local.embedded) and its
# defaults; the minimal relay and the ceilings use the same, so only the relay's own work differs.
CONSUMER: dict[str, Any] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "fetch_max_wait_ms": 10,
    "session_timeout_ms": 1000,
    "heartbeat_interval_ms": 200,
    "max_partition_fetch_bytes": MAX_FRAME + 64 * 1024,
}
PRODUCER: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": False,
    "linger_ms": 5,
    "max_batch_size": 256 * 1024,
    "max_request_size": MAX_FRAME + 64 * 1024,
}


async def prefill(bootstrap: str, topic: str, count: int, first: int = 0, size: int = 512 * 1024) -> None:
    """Write records first..first+count-1 to partition 0 in big hand-built batches."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        max_batch_size=size,
        max_request_size=2 * size,
    )
    await producer.start()
    try:
        key, seq, end, pending = clock.ANCHOR.encode(), first, first + count, []
        while seq < end:
            batch = producer.create_batch()
            while seq < end and batch.append(key=key, value=clock.record(seq), timestamp=None):
                seq += 1
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=0))
            if len(pending) >= 4:
                await pending.pop(0)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def counter(args: argparse.Namespace, watch: clock.Watch) -> None:
    """Until partition 0 holds `expect` records: fetches at offset expect-1, which the broker answers
    with nothing (and the high watermark) until that record exists, so it reads at most one batch."""
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, **CONSUMER)
    await consumer.start()
    try:
        tp = TopicPartition(args.topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, args.expect - 1)
        clock.emit("ready")
        while True:
            batch = await consumer.getmany(timeout_ms=50)
            high = consumer.highwater(tp)
            if batch.get(tp) or (high is not None and high >= args.expect):
                clock.emit("done", watch, count=args.expect)
                return
    finally:
        await consumer.stop()


async def reader(args: argparse.Namespace, watch: clock.Watch) -> None:
    """A consumer with the relays' settings, alone: the Kafka read ceiling, and the latency floor."""
    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=args.group, **CONSUMER)
    await consumer.start()
    count, delays = 0, []
    try:
        clock.emit("ready")
        while count < args.expect:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                if args.latency:
                    now = time.monotonic_ns()
                    delays += [now - sent for r in records if (sent := clock.stamp(r.value)) is not None]
                if count == 0:
                    clock.emit("first", watch)
                count += len(records)
        clock.emit("done", watch, count=count, **clock.percentiles(delays))
    finally:
        await consumer.stop()


async def writer(args: argparse.Namespace, watch: clock.Watch) -> None:
    """The broker's ingest ceiling: batches built by hand (256 KiB, as the relays'), four in flight,
    so that not the client's per-record work but the broker is measured."""
    clock.emit("first", watch)
    await prefill(args.bootstrap, args.topic, args.count, size=PRODUCER["max_batch_size"])
    clock.emit("done", watch, count=args.count)


async def paced(args: argparse.Namespace, watch: clock.Watch) -> None:
    """Stamped records at `rate` a second, in ticks of 10 ms (a sleep per record would be late)."""
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, **PRODUCER)
    await producer.start()
    try:
        key, sent, start = clock.ANCHOR.encode(), 0, time.monotonic()
        total = int(args.rate * args.seconds)
        while sent < total:
            due = min(total, int((time.monotonic() - start) * args.rate) + 1)
            while sent < due:
                await producer.send(args.topic, clock.stamped(sent), key=key)
                sent += 1
            await asyncio.sleep(0.01)
        await producer.flush()
        clock.emit("done", watch, count=sent)
    finally:
        await producer.stop()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", choices=("counter", "reader", "writer", "paced"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", default="bench-reader")
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--latency", action="store_true", help="reader: delays of stamped records")
    parser.add_argument("--watch", default="", help="pids whose CPU each snapshot records: 1,2 or @file")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    roles = {"counter": counter, "reader": reader, "writer": writer, "paced": paced}
    asyncio.run(roles[arguments.role](arguments, clock.Watch(arguments.watch)))
