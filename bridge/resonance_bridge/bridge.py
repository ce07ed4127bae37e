"""One bridge: a node's Kafka topic <-> its WebSocket endpoint, at-least-once both ways.

The Bridge object owns all state. Per WebSocket connection (a session) three tasks carry data:
  outbound: Kafka records -> codec -> frames; each record enters the in-flight window
  inbound:  frames -> codec -> Kafka records (or the node's acks -> window -> commit)
  replies:  in frame order, waits for Kafka to store each inbound record, then acks it to the node
beside an ack watchdog (reconnect when the node stops acking) and the drain on stop.
Across sessions, the loops in upkeep.py: heartbeats, offset commits and a Kafka liveness probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidHandshake
from websockets.frames import CloseCode

from . import codec, kafka, upkeep
from .backoff import Backoff
from .codec import Message, Rejected
from .config import Config
from .metrics import Metrics
from .reader import KafkaReader
from .window import Partition, Window
from .writer import KafkaWriter, Reply

log = logging.getLogger("resonance.bridge")


def _log_heartbeat_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("heartbeat not stored in Kafka: %s", future.exception())


class Bridge:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.window = Window()
        self.stopping = asyncio.Event()
        self.room = asyncio.Event()  # set while the in-flight window has room
        self.drained = asyncio.Event()  # set when no record is in flight
        self.reader: KafkaReader = None  # type: ignore[assignment]  # set by run()
        self.writer: KafkaWriter = None  # type: ignore[assignment]  # set by run()
        self.ws: ClientConnection | None = None
        self.kafka_ok = False
        self.auth_headers = {"Authorization": f"Bearer {config.auth_token}"} if config.auth_token else None
        self.metrics.in_flight.set_function(lambda: self.window.pending)  # read at scrape time
        self.metrics.describe(config)

    def stop(self) -> None:
        self.stopping.set()

    def readiness(self) -> tuple[bool, str]:
        kafka_state = "connected" if self.kafka_ok else "disconnected"
        ws_state = "connected" if self.ws is not None else "disconnected"
        return self.kafka_ok and self.ws is not None, f"kafka {kafka_state}, websocket {ws_state}"

    async def run(self) -> None:
        """Relay until stop(); then drain in-flight acks for up to the grace period, commit, close."""
        cfg, retry = self.config, self.metrics.kafka_reconnects.inc
        async with (
            kafka.started(lambda: kafka.producer(cfg), "producer", self.stopping, retry) as producer,
            kafka.started(lambda: kafka.consumer(cfg), "consumer", self.stopping, retry) as consumer,
        ):
            if producer is None or consumer is None:
                return  # stopped before Kafka was reachable
            self.reader = KafkaReader(consumer, self.window, cfg.topic)
            self.writer = KafkaWriter(cfg, producer)
            self.kafka_ok = True
            self.metrics.kafka_connected.set(1)
            loops = {
                "heartbeats": lambda: upkeep.heartbeats(cfg, self._emit_heartbeat, self.metrics),
                "commits": lambda: upkeep.commits(cfg, self.reader, self.metrics),
                "kafka probe": lambda: upkeep.probe(self.reader, self._kafka_probed),
            }
            background = [asyncio.create_task(upkeep.supervise(name, loop)) for name, loop in loops.items()]
            try:
                await self._sessions()
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await kafka.bounded(self.reader.commit(), "final commit")

    # --- WebSocket sessions -------------------------------------------------------------------

    async def _sessions(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                ws = await connect(
                    self.config.endpoint,
                    compression=None,
                    open_timeout=10,
                    additional_headers=self.auth_headers,
                    # Oversized frames up to 8x are read whole, to dead-letter their payload; beyond that
                    # memory matters more: the connection is closed (1009) and the event dead-lettered.
                    max_size=8 * self.config.max_frame_bytes,
                )
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                delay = backoff.next_delay()
                log.warning("node %s unreachable (%s); retrying in %.1fs", self.config.endpoint, exc, delay)
                self.metrics.ws_reconnects.inc()
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
        await self.reader.rewind()
        self._window_changed()
        if not self.stopping.is_set():
            self.metrics.ws_reconnects.inc()

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
            batch = await self.reader.fetch(room)
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
                        self.metrics.unknown_out.inc()
                    if ack_mode:
                        self.window.sent(decoded.type, decoded.id, now, partition, record.offset)
                    sends.append((decoded.raw, partition, record.offset))
            for raw, partition, offset in sends:
                await ws.send(raw, text=True)
                if not ack_mode:
                    self.window.done(partition, offset)
            self.metrics.relayed_out.inc(len(sends))
            self._window_changed()

    async def _dead_letter_record(self, rejected: Rejected, record: Any) -> None:
        source = f"{record.topic}/{record.partition}/{record.offset}"
        log.warning("record %s dead-lettered: %s", source, rejected.detail)
        await self.writer.dead_letter(rejected, "outbound", **{"resonance-source": source})
        self.metrics.dead_letters.labels("outbound", rejected.reason).inc()

    def _on_ack(self, message: Message) -> None:
        original = message.body.get("original_type")
        if original in codec.REPLY_TYPES:
            return  # the node acking our own ack (the guide's sample node acks everything)
        self.metrics.acks_from_node.inc()
        if self.config.ack_mode != "ack":
            return
        result = self.window.ack(original if isinstance(original, str) else None, message.id)
        if result.entry is None or result.mismatched:
            self.metrics.ack_mismatches.inc()
        self._window_changed()

    def _window_changed(self) -> None:
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
        try:
            async for frame in ws:
                decoded = codec.decode_frame(frame, self.config.max_frame_bytes)
                if isinstance(decoded, Message):
                    if decoded.type == "ack":
                        self._on_ack(decoded)
                        continue
                    if not decoded.known:
                        self.metrics.unknown_in.inc()
                else:
                    log.warning("frame from %s dead-lettered: %s", self.config.node, decoded.detail)
                await replies.put(await self.writer.request(decoded))
        except ConnectionClosedError as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                rejected = codec.unread_frame(exc.sent.reason, self.config.max_frame_bytes)
                unknown = {"resonance-original-size": "unknown"}
                await kafka.bounded(self.writer.dead_letter(rejected, "inbound", **unknown), "dead letter")
                self.metrics.dead_letters.labels("inbound", rejected.reason).inc()
            raise

    async def _replies(self, ws: ClientConnection, replies: asyncio.Queue[Reply]) -> None:
        """Answer the node in the order it sent, each once Kafka stored the record."""
        while True:
            reply = await replies.get()
            await self.writer.settle(reply)
            await ws.send(reply.answer, text=True)
            replies.task_done()
            if reply.error is None:
                self.metrics.relayed_in.inc()
                self.metrics.acks_to_node.inc()
            else:
                self.metrics.dead_letters.labels("inbound", reply.error).inc()

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

    def _kafka_probed(self, ok: bool) -> None:
        if ok and not self.kafka_ok:
            self.metrics.kafka_reconnects.inc()
        if ok != self.kafka_ok:
            log.warning("kafka %s", "reachable again" if ok else "unreachable")
        self.kafka_ok = ok
        self.metrics.kafka_connected.set(int(ok))

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
        future = await self.writer.send(
            cfg.heartbeat_topic, codec.encode(record), kafka.headers(cfg, **{"resonance-type": "heartbeat"})
        )
        future.add_done_callback(_log_heartbeat_failure)
