"""One bridge: a node's Kafka topic <-> its WebSocket endpoint, at-least-once both ways.

The Bridge object owns all state. Per WebSocket connection (a session) three tasks run:
  outbound: Kafka records -> codec -> frames; each record enters the in-flight window
  inbound:  frames -> codec -> Kafka records (or the node's acks -> window -> commit)
  replies:  in frame order, waits for Kafka to store each inbound record, then acks it to the node
Across sessions: heartbeats, offset commits and a Kafka liveness probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from . import codec, kafka
from .backoff import Backoff
from .codec import Message, Rejected
from .config import Config
from .metrics import Metrics
from .window import Partition, Window

log = logging.getLogger("resonance.bridge")


@dataclass(slots=True)
class Reply:
    """An inbound frame on its way to Kafka, and what to tell the node once Kafka has it."""

    future: asyncio.Future[Any]
    topic: str
    value: bytes
    headers: kafka.Headers
    frame: dict[str, Any]


def _log_heartbeat_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("heartbeat not stored in Kafka: %s", future.exception())


async def _supervise(loop: Callable[[], Awaitable[None]]) -> None:
    """Keep a background loop alive: a bug or an odd error in one tick must not stop heartbeats."""
    while True:
        try:
            await loop()
        except Exception:
            log.exception("%s failed; restarting it", loop.__name__)
            await asyncio.sleep(1)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.bridge.commit()  # hand over what was acked before another consumer takes over
        self.bridge.window.revoke({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


class Bridge:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.window = Window()
        self.stopping = asyncio.Event()
        self.room = asyncio.Event()  # set while the in-flight window has room
        self.drained = asyncio.Event()  # set when no record is in flight
        self.producer = kafka.producer(config)
        self.consumer = kafka.consumer(config)
        self.ws: ClientConnection | None = None
        self.kafka_ok = False
        self.metrics.info.info(
            {
                "node": config.node,
                "anchor": config.anchor,
                "topic": config.topic,
                "endpoint": config.endpoint,
                "ack_mode": config.ack_mode,
            }
        )

    def stop(self) -> None:
        self.stopping.set()

    def readiness(self) -> tuple[bool, str]:
        kafka_state = "connected" if self.kafka_ok else "disconnected"
        ws_state = "connected" if self.ws is not None else "disconnected"
        return self.kafka_ok and self.ws is not None, f"kafka {kafka_state}, websocket {ws_state}"

    async def run(self) -> None:
        """Relay until stop(); then drain in-flight acks for up to the grace period, commit, close."""
        retry = self.metrics.reconnects.labels("kafka").inc
        if not await kafka.start_with_retry(self.producer, "producer", self.stopping, retry):
            return
        try:
            if not await kafka.start_with_retry(self.consumer, "consumer", self.stopping, retry):
                return
            self.consumer.subscribe([self.config.topic], listener=_Rebalance(self))
            self.kafka_ok = True
            self.metrics.kafka_connected.set(1)
            background = [
                asyncio.create_task(_supervise(loop))
                for loop in (self._heartbeats, self._commits, self._probe)
            ]
            try:
                await self._sessions()
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await self.commit()
        finally:
            await self.consumer.stop()  # leaves the group, so a successor gets the partitions at once
            await self.producer.stop()  # flushes anything still batched

    # --- WebSocket sessions -------------------------------------------------------------------

    async def _sessions(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                ws = await connect(
                    self.config.endpoint,
                    compression=None,
                    open_timeout=10,
                    max_size=8 * self.config.max_frame_bytes,
                )
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                delay = backoff.next_delay()
                log.warning("node %s unreachable (%s); retrying in %.1fs", self.config.endpoint, exc, delay)
                self.metrics.reconnects.labels("websocket").inc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                continue
            backoff.reset()
            log.info("connected to node %s", self.config.endpoint)
            await self._session(ws)

    async def _session(self, ws: ClientConnection) -> None:
        replies: asyncio.Queue[Reply] = asyncio.Queue(self.config.max_in_flight)
        self.ws = ws
        self.metrics.websocket_connected.set(1)
        tasks: set[asyncio.Task[None]] = set()
        try:
            await self._send_control(
                ws, codec.frequency_sync(self.config.anchor, self.config.frequency_hz, self.config.s_roi)
            )
            outbound = asyncio.create_task(self._outbound(ws))
            tasks = {
                outbound,
                asyncio.create_task(self._inbound(ws, replies)),
                asyncio.create_task(self._replies(ws, replies)),
                asyncio.create_task(self._watch_acks(ws)),
                asyncio.create_task(self._drain(ws, replies)),
            }
            while tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                tasks -= done
                if done != {outbound} or outbound.exception() is not None:
                    break  # outbound returning normally just means "stopping": keep reading acks
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("session with %s ended: %r", self.config.endpoint, task.exception())
        except ConnectionClosed as exc:
            log.warning("session with %s ended: %r", self.config.endpoint, exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ws.close()
            self.ws = None
            self.metrics.websocket_connected.set(0)
            await self._rewind()

    async def _rewind(self) -> None:
        """Unacked records are sent again on the next connection: duplicates possible, loss not."""
        await self.commit()
        assigned = self.consumer.assignment()
        for (topic, partition), offset in self.window.rewind().items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                self.consumer.seek(tp, offset)
        self._window_changed()
        if not self.stopping.is_set():
            self.metrics.reconnects.labels("websocket").inc()

    async def _send_control(self, ws: ClientConnection, body: dict[str, Any]) -> None:
        if self.config.ack_mode == "ack":
            self.window.sent(body["type"], None, time.monotonic())
        await ws.send(codec.encode(body), text=True)

    # --- outbound: Kafka -> node --------------------------------------------------------------

    async def _outbound(self, ws: ClientConnection) -> None:
        ack_mode = self.config.ack_mode == "ack"
        while not self.stopping.is_set():
            room = self.config.max_in_flight - self.window.pending
            if room <= 0:
                self.room.clear()
                await self.room.wait()  # backpressure: an ack, a rewind or stop() sets it
                continue
            batch = await self.consumer.getmany(timeout_ms=500, max_records=room)
            sends: list[tuple[bytes, Partition, int]] = []
            now = time.monotonic()
            for tp, records in batch.items():
                partition = (tp.topic, tp.partition)
                for record in records:
                    decoded = codec.decode(record.value or b"", self.config.max_frame_bytes)
                    if isinstance(decoded, Rejected):
                        await self._dead_letter_record(decoded, record)
                        self.window.done(partition, record.offset)
                        continue
                    if not decoded.known:
                        self.metrics.unknown_types.labels("outbound").inc()
                    if ack_mode:
                        self.window.sent(decoded.type, decoded.id, now, partition, record.offset)
                    sends.append((decoded.raw, partition, record.offset))
            for raw, partition, offset in sends:
                await ws.send(raw, text=True)
                if not ack_mode:
                    self.window.done(partition, offset)
            self.metrics.relayed.labels("outbound").inc(len(sends))
            self._window_changed()

    async def _dead_letter_record(self, rejected: Rejected, record: Any) -> None:
        log.warning(
            "record %s[%d]@%d dead-lettered: %s",
            record.topic,
            record.partition,
            record.offset,
            rejected.detail,
        )
        value, headers = kafka.dead_letter(
            self.config,
            rejected,
            "outbound",
            **{"resonance-source": f"{record.topic}/{record.partition}/{record.offset}"},
        )
        await self._store(self.config.deadletter_topic, value, headers)
        self.metrics.dead_letters.labels("outbound", rejected.reason).inc()

    def _on_ack(self, message: Message) -> None:
        original = message.body.get("original_type")
        if original in codec.REPLY_TYPES:
            return  # the node acking our own ack (the guide's sample node acks everything)
        self.metrics.acks.labels("from_node").inc()
        if self.config.ack_mode != "ack":
            return
        result = self.window.ack(original if isinstance(original, str) else None, message.id)
        if result.entry is None or result.mismatched:
            self.metrics.ack_mismatches.inc()
        self._window_changed()

    def _window_changed(self) -> None:
        self.metrics.in_flight.set(self.window.pending)
        if self.window.pending < self.config.max_in_flight:
            self.room.set()
        if not self.window.pending:
            self.drained.set()

    async def _watch_acks(self, ws: ClientConnection) -> None:
        """A node that stopped acking gets a fresh connection and the unacked records again."""
        timeout = self.config.ack_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            self.window.expire_control(now - timeout)
            oldest = self.window.oldest_unacked()
            if oldest is not None and oldest.partition is not None and now - oldest.sent_at > timeout:
                self.metrics.ack_timeouts.inc()
                log.warning("node sent no ack for %.0fs; reconnecting to redeliver", timeout)
                return

    # --- inbound: node -> Kafka ---------------------------------------------------------------

    async def _inbound(self, ws: ClientConnection, replies: asyncio.Queue[Reply]) -> None:
        async for frame in ws:
            decoded = codec.decode_frame(frame, self.config.max_frame_bytes)
            if isinstance(decoded, Message):
                if decoded.type == "ack":
                    self._on_ack(decoded)
                    continue
                if not decoded.known:
                    self.metrics.unknown_types.labels("inbound").inc()
                topic, value = self.config.inbound_topic, decoded.raw
                headers = kafka.headers(self.config, **{"resonance-type": decoded.type})
                reply = codec.ack(decoded.type, decoded.id)
            else:
                log.warning("frame from %s dead-lettered: %s", self.config.node, decoded.detail)
                topic = self.config.deadletter_topic
                value, headers = kafka.dead_letter(self.config, decoded, "inbound")
                reply = codec.error(decoded)
            await replies.put(Reply(await self._send(topic, value, headers), topic, value, headers, reply))

    async def _replies(self, ws: ClientConnection, replies: asyncio.Queue[Reply]) -> None:
        while True:
            reply = await replies.get()
            await self._settle(reply)
            await ws.send(codec.encode(reply.frame), text=True)
            replies.task_done()
            if reply.frame["type"] == "ack":
                self.metrics.relayed.labels("inbound").inc()
                self.metrics.acks.labels("to_node").inc()
            else:
                self.metrics.dead_letters.labels("inbound", reply.frame["reason"]).inc()

    async def _settle(self, reply: Reply) -> None:
        """Wait until Kafka stored the record; retry it (forever, with backoff) if the broker failed."""
        try:
            await reply.future
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
            rejected = Rejected("kafka_rejected", f"Kafka refused the record: {exc}", reply.value)
            value, headers = kafka.dead_letter(self.config, rejected, "inbound")
            await self._store(self.config.deadletter_topic, value, headers)
            reply.frame = codec.error(rejected)
        except KafkaError:
            await self._store(reply.topic, reply.value, reply.headers)

    async def _send(self, topic: str, value: bytes, headers: kafka.Headers) -> asyncio.Future[Any]:
        """Start producing a record; a failure to even enqueue it becomes the future's outcome."""
        try:
            future: asyncio.Future[Any] = await self.producer.send(
                topic, value, key=self.config.anchor.encode(), headers=headers
            )
        except KafkaError as exc:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        return future

    async def _store(self, topic: str, value: bytes, headers: kafka.Headers) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.producer.send_and_wait(
                    topic, value, key=self.config.anchor.encode(), headers=headers
                )
                return
            except KafkaError as exc:
                delay = backoff.next_delay()
                log.warning("kafka refused a record for %s (%s); retrying in %.1fs", topic, exc, delay)
                await asyncio.sleep(delay)

    async def _drain(self, ws: ClientConnection, replies: asyncio.Queue[Reply]) -> None:
        """On stop: the outbound task stops fetching; wait for acks both ways, then close."""
        await self.stopping.wait()
        self.room.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled(replies), self.config.shutdown_grace_s)
        await ws.close(1001, "bridge shutting down")

    async def _settled(self, replies: asyncio.Queue[Reply]) -> None:
        while self.window.pending:
            self.drained.clear()
            await self.drained.wait()
        await replies.join()

    # --- across sessions ----------------------------------------------------------------------

    async def commit(self) -> None:
        assigned = self.consumer.assignment()
        offsets = {
            TopicPartition(*p): o
            for p, o in self.window.take_commits().items()
            if TopicPartition(*p) in assigned
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("offset commit failed (%s); will retry", exc)
            for tp in offsets:
                self.window.committed.pop((tp.topic, tp.partition), None)

    async def _commits(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval_ms / 1000)
            await self.commit()
            lag = 0
            for tp in self.consumer.assignment():
                high = self.consumer.highwater(tp)
                if high is not None:
                    done = self.window.committable.get((tp.topic, tp.partition))
                    lag += max(0, high - (done if done is not None else await self.consumer.position(tp)))
            self.metrics.consumer_lag.set(lag)

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(5)
            try:
                await asyncio.wait_for(self.consumer.topics(), 5)
                ok = True
            except (KafkaError, OSError, TimeoutError):
                ok = False
            if ok and not self.kafka_ok:
                self.metrics.reconnects.labels("kafka").inc()
            if ok != self.kafka_ok:
                log.warning("kafka %s", "reachable again" if ok else "unreachable")
            self.kafka_ok = ok
            self.metrics.kafka_connected.set(int(ok))

    async def _heartbeats(self) -> None:
        """Ticks on a fixed schedule (deadlines, not sleeps, so the interval does not drift); each
        tick's sends run in a task of their own, so a slow broker or node cannot delay the next tick.
        Drift is the mean interval of the last ten ticks minus the configured one: one late tick
        shows, but does not swing the gauge by a whole stall and back."""
        interval = self.config.heartbeat_interval_s
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        ticks: deque[float] = deque(maxlen=11)
        emitting: set[asyncio.Task[None]] = set()
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            now = loop.time()
            ticks.append(now)
            if len(ticks) > 1:
                self.metrics.heartbeat_drift.set((ticks[-1] - ticks[0]) / (len(ticks) - 1) - interval)
            # Late by more than an interval (a stalled machine)? Skip the missed slots, keep the phase.
            next_at += interval * max(1, math.ceil((now - next_at) / interval))
            task = asyncio.create_task(self._emit_heartbeat())
            emitting.add(task)
            task.add_done_callback(emitting.discard)

    async def _emit_heartbeat(self) -> None:
        cfg = self.config
        body = codec.heartbeat(cfg.anchor, cfg.frequency_hz, cfg.s_roi)
        self.metrics.heartbeats.inc()
        self.metrics.last_heartbeat.set(time.time())
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._send_control(ws, body)
        record = {
            **body,
            "node": cfg.node,
            "websocket_connected": ws is not None,
            "in_flight": self.window.pending,
        }
        future = await self._send(
            cfg.heartbeat_topic, codec.encode(record), kafka.headers(cfg, **{"resonance-type": "heartbeat"})
        )
        future.add_done_callback(_log_heartbeat_failure)
