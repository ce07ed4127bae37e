"""The baseline for bench/relay.py: the least a Kafka <-> WebSocket relay can do, with no guarantees.

  out: consumer.getmany -> `await ws.send` per record; no decoding, no acks awaited, no commits
  in:  WebSocket frames -> producer.send, never waiting for Kafka to store them; no acks to the node

It uses the same Kafka client settings as the bridge (bench/kafka_side.py: acks=all, linger 5 ms,
256 KiB batches, the same fetch sizes and waits), so what differs is only the bridge's work per message.

    python bench/baseline_relay.py out --bootstrap HOST:PORT --topic T --group G --endpoint ws://...
    python bench/baseline_relay.py in --bootstrap HOST:PORT --topic T --endpoint ws://...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka_side import CONSUMER, MAX_FRAME, PRODUCER
from websockets.asyncio.client import ClientConnection, connect


async def _ignore(ws: ClientConnection) -> None:
    """Read and drop what the node sends (its acks), so that its sends never block on us."""
    async for _ in ws:
        pass


async def outbound(args: argparse.Namespace) -> None:
    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=args.group, **CONSUMER)
    await consumer.start()
    try:
        async with connect(args.endpoint, compression=None, max_size=8 * MAX_FRAME) as ws:
            ignoring = asyncio.create_task(_ignore(ws))
            try:
                while True:
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        for record in records:
                            await ws.send(record.value, text=True)
            finally:
                ignoring.cancel()
    finally:
        await consumer.stop()


async def inbound(args: argparse.Namespace) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, **PRODUCER)
    await producer.start()
    key = args.anchor.encode()
    try:
        async with connect(args.endpoint, compression=None, max_size=8 * MAX_FRAME) as ws:
            async for frame in ws:
                value = frame.encode() if isinstance(frame, str) else frame
                await producer.send(args.topic, value, key=key)  # enqueue only: the future is dropped
    finally:
        await producer.stop()


async def main(args: argparse.Namespace) -> None:
    task = asyncio.create_task(outbound(args) if args.direction == "out" else inbound(args))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("direction", choices=("out", "in"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--group", default="resonance-bench-baseline")
    parser.add_argument("--anchor", default="BOLZANO_71")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
