"""The node's frames go to Kafka in batches built here rather than one send() each.

aiokafka's send() costs several microseconds a record (a partitioner call, a future, a turn through
its accumulator); appending to a BatchBuilder costs a fraction of that (bench/RESULTS.md). One task
hands the batches to the producer in order, one in flight at a time, while the next fills: a lone
frame goes at once, a stream in batches as large as the load makes them, and records keep the
node's order. Every record of a batch is stored when the batch is (acks=all), and its future says
so; if the batch fails, each record is stored again on its own by KafkaWriter.settle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from .kafka import Headers


class Batcher:
    def __init__(self, producer: AIOKafkaProducer, topic: str, key: bytes) -> None:
        self.producer, self.topic, self.key = producer, topic, key
        self.partitioner = DefaultPartitioner()  # the producer's own: same key, same partition
        self.builder: Any = None  # the open batch, filling while the one before is in flight
        self.done: asyncio.Future[Any] | None = None  # its outcome, shared by its records
        self.queue: deque[tuple[Any, asyncio.Future[Any]]] = deque()  # full, not yet handed over
        self.wake = asyncio.Event()
        self.emptied = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(self, value: bytes, headers: Headers) -> asyncio.Future[Any] | None:
        """The future of the batch the record joined; None if it is too large for any batch."""
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._hand_over())
        for _ in range(2):
            if self.builder is None:
                self.builder = self.producer.create_batch()
                self.done = asyncio.get_running_loop().create_future()
                self.done.add_done_callback(_retrieved)  # a batch whose session ended has no reader
            if self.builder.append(key=self.key, value=value, timestamp=None, headers=headers) is not None:
                self.wake.set()
                assert self.done is not None
                return self.done
            if self.builder.record_count() == 0:
                return None  # larger than a whole batch: KafkaWriter sends it alone
            self._close()
        return None

    async def flushed(self) -> None:
        """Everything added so far is in the producer's hands: a record sent alone after it keeps
        its place in the node's order."""
        self._close()
        while self.queue:
            self.emptied.clear()
            self.wake.set()
            await self.emptied.wait()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def _close(self) -> None:
        if self.builder is None or self.done is None or self.builder.record_count() == 0:
            return
        self.builder.close()
        self.queue.append((self.builder, self.done))
        self.builder, self.done = None, None

    async def _hand_over(self) -> None:
        """One batch in flight at a time (aiokafka sends one request per broker at a time anyway):
        what arrives meanwhile fills the next, so batches grow with the load."""
        while True:
            if not self.queue:
                self._close()
            if not self.queue:
                self.emptied.set()
                self.wake.clear()
                await self.wake.wait()
                continue
            builder, done = self.queue[0]
            try:
                partitions = list(await self.producer.partitions_for(self.topic))  # as send() lists them
                partition = self.partitioner(self.key, partitions, partitions)
                sent = await self.producer.send_batch(builder, self.topic, partition=partition)
            except KafkaError as exc:
                self.queue.popleft()
                if not done.done():
                    done.set_exception(exc)
                continue
            self.queue.popleft()
            if not self.queue:
                self.emptied.set()
            await asyncio.wait([sent])
            _copy(sent, done)


def _copy(outcome: asyncio.Future[Any], done: asyncio.Future[Any]) -> None:
    if done.done():
        return
    if outcome.cancelled():
        done.cancel()
    elif (exc := outcome.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(outcome.result())


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
