"""One WebSocket connection to the node: its socket, its reply queue and its tasks, ended as a unit.

  outbound:   Kafka records -> relay.admit -> frames (or dead letters, each stored by a task of its own)
  inbound:    frames -> codec -> acks (relay.on_ack) or Kafka records (writer.request)
  replies:    in frame order, waits for Kafka to store each inbound record, then answers the node
  watchdog:   a node that acks nothing for the ack timeout gets a new connection (liveness.py)
  keepalive:  pings; no pong and nothing else within the timeout: a dead connection (a black hole)
  drain:      on stop, waits for acks both ways for up to the grace period, then closes

When one of them ends, all do; the relay then forgets what was in flight and the reader fetches it
again from the first record not done: duplicates are possible, loss is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.frames import CloseCode

from . import codec, liveness
from .codec import Message, Rejected
from .config import Config
from .connection import NodeSilent, Relaying, why_closed
from .metrics import Metrics
from .reader import KafkaReader
from .relay import MISMATCH_LOG, Relay, chunks
from .window import Entry
from .writer import KafkaWriter, Reply, Stopping, answered

log = logging.getLogger("resonance.bridge")
acks_log = logging.getLogger("resonance.acks")  # held to one line a minute per kind (logs.py)
dead_log = logging.getLogger("resonance.deadletters")  # likewise

# Inbound records waiting for Kafka hold their bytes until stored: past this the bridge stops reading.
INBOUND_BYTES = 16 * 1024 * 1024
# Inbound frames read and not answered yet, in RESONANCE_MAX_IN_FLIGHTs: room for the batch in flight
# to Kafka and the next filling, each up to KAFKA_BATCH_SIZE (1 MiB: ~1,000 records of 1 KB).
INBOUND_WINDOWS = 2


@dataclass(frozen=True, slots=True)
class Shared:
    """What a session shares with the bridge and with the sessions before and after it."""

    config: Config
    metrics: Metrics
    relay: Relay
    reader: KafkaReader
    writer: KafkaWriter
    stopping: asyncio.Event


class Session:
    why: BaseException | None = None  # what ended it (closed_for: the reason given to replace())

    def __init__(self, shared: Shared, ws: Relaying, peer: str) -> None:
        self.s = shared
        self.ws = ws
        self.peer = peer  # the node's endpoint, or the address a node dialled in from
        ws.max_unsent = 4 * shared.config.max_frame_bytes + 1024 * 1024
        self.replies: deque[Reply] = deque()  # in the node's order
        self.queued = asyncio.Event()  # set when a reply is added
        self.unanswered = self.unanswered_bytes = 0  # inbound frames read, not answered yet; their bytes
        self.changed = asyncio.Event()  # set whenever the window or the reply queue shrinks
        self.workers: set[asyncio.Task[None]] = set()  # see _spawn()
        self.uncounted = 0  # acks read, not yet added to their counter (counted once per run)
        self.settled = False  # an ack of the run being read settled a message
        self.delivered: list[float] = []  # the run's delivery latencies, observed together
        self.closed_for = ""

    # --- the unit -------------------------------------------------------------------------------

    async def run(self) -> None:
        cfg, metrics = self.s.config, self.s.metrics
        outbound = asyncio.create_task(self._outbound())
        metrics.websocket_connected.set(1)
        tasks = {
            outbound,
            asyncio.create_task(self._inbound()),
            asyncio.create_task(self._replies()),
            asyncio.create_task(liveness.watchdog(self.s.relay, cfg, metrics)),
            asyncio.create_task(liveness.keepalive(self.ws, self.s.relay, cfg)),
            asyncio.create_task(self._drain()),
        }
        try:
            await self.send_control(codec.frequency_sync(cfg.anchor, cfg.frequency_hz, cfg.s_roi))
            while tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                tasks -= done
                if done != {outbound} or outbound.exception() is not None:
                    break  # outbound returning normally just means "stopping": keep reading acks
            failures = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
            if failures:  # several often fail at once, of one cause: the watchdogs' say it, else any
                self._ended(next((f for f in failures if isinstance(f, NodeSilent)), failures[0]))
        except ConnectionClosed as exc:
            self._ended(exc)
        finally:
            for task in tasks | self.workers:
                task.cancel()
            await asyncio.gather(*tasks, *self.workers, return_exceptions=True)
            await self._close()
            metrics.acks_from_node.inc(self.uncounted)
            metrics.websocket_connected.set(0)
            self.s.reader.seek(self.s.relay.rewind(time.monotonic()))
            if self.ws.overflowed:
                what = "node %s stopped reading (%d bytes unsent, mostly answers to its pings); dropped"
                log.warning(what, self.peer, self.ws.overflowed)

    def _ended(self, why: BaseException | None) -> None:
        self.why, level = why, logging.INFO if self.s.stopping.is_set() else logging.WARNING
        log.log(level, "session with %s ended: %s", self.peer, why_closed(why))

    def replace(self, code: int = 4000, reason: str = "replaced by a newer connection") -> None:
        """End this session for a newer one (listener.py) or the primary (dialer.py); its unacked
        records go to the next; a half-open connection is dropped after the closing timeout."""
        self.closed_for = reason
        self._spawn(self.ws.close(code, reason))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """A task of this session's (a dead letter's store, a close): cancelled when it ends."""
        worker = asyncio.create_task(work)
        self.workers.add(worker)
        worker.add_done_callback(self.workers.discard)

    async def _close(self) -> None:
        """The closing handshake, unless the connection is already gone or evidently dead."""
        if self.ws.overflowed or self.unresponsive_for() is not None:
            self.ws.transport.abort()
        with contextlib.suppress(Exception):
            await self.ws.close()  # within the connection's close_timeout

    def unresponsive_for(self) -> float | None:
        return liveness.unresponsive_for(self.ws, self.s.relay, self.s.config)

    async def send_control(self, body: dict[str, Any]) -> None:
        await self.ws.send(self.s.relay.control(body, time.monotonic()), text=True)

    async def _until(self, condition: Any) -> None:
        while not condition():
            self.changed.clear()
            await self.changed.wait()

    # --- outbound: Kafka -> node ------------------------------------------------------------------

    async def _outbound(self) -> None:
        relay, reader, metrics, stopping = self.s.relay, self.s.reader, self.s.metrics, self.s.stopping
        while not stopping.is_set():
            if relay.room <= 0:
                await self._until(lambda: relay.room > 0 or stopping.is_set())
                continue
            fetched = await reader.fetch(relay.room)
            # No await since the fetch: every record is accounted for.
            out = relay.admit(fetched.records, time.monotonic(), fetched.undecodable)
            for rejected, entry, source in out.dead_letters:
                self._spawn(self._dead_letter_record(rejected, entry, source))
            for chunk in chunks(out.frames):  # one write each, with flow control between them
                await self.ws.send_texts([raw for raw, _ in chunk])
                if not relay.acks:  # ack mode send: delivered when written
                    wall = time.time()
                    for _, entry in chunk:
                        relay.written(entry)
                        if entry.timestamp:
                            metrics.delivery_out.observe(wall - entry.timestamp)
            metrics.relayed_out.inc(len(out.frames))
            metrics.unknown_out.inc(out.unknown)
            self.changed.set()

    async def _dead_letter_record(self, rejected: Rejected, entry: Entry, source: dict[str, str]) -> None:
        """Stored in Kafka before it counts as done (and before the log says so)."""
        try:
            await self.s.writer.dead_letter(rejected, "outbound", **source)
        except Stopping:
            return  # not done: fetched and dead-lettered again after the restart
        self.s.relay.dead_lettered(entry)
        self.s.metrics.dead_letters.labels("outbound", rejected.reason).inc()
        what, where = "record %s dead-lettered (%s): %s", source["resonance-source"]
        dead_log.warning(what, where, rejected.reason, rejected.detail, extra={"direction": "outbound"})
        self.changed.set()

    # --- inbound: node -> Kafka -------------------------------------------------------------------

    def _room(self) -> bool:
        """Room for another inbound frame: answers pending, in number and in bytes, under the bounds."""
        bound = INBOUND_WINDOWS * self.s.config.max_in_flight
        return self.unanswered < bound and self.unanswered_bytes < INBOUND_BYTES

    async def _inbound(self) -> None:
        cfg, relay, metrics, ws = self.s.config, self.s.relay, self.s.metrics, self.ws
        try:
            while True:
                await ws.arrival()
                arrived, wall = time.monotonic(), time.time()
                while (message := ws.take()) is not None:  # all that arrived, without an await
                    data, text = message
                    ack = codec.quick_ack(data, text, cfg.max_frame_bytes)
                    if ack is not None:
                        self._on_ack(ack, data, wall)
                        continue
                    decoded = codec.decode_frame(data, text, cfg.max_frame_bytes)
                    if isinstance(decoded, Message):
                        if decoded.type == "ack":  # one quick_ack() leaves to json
                            self._on_ack(codec.ack_of(decoded), data, wall)
                            continue
                        if not decoded.known:
                            metrics.unknown_in.inc()
                    self._acks_read()  # before waiting: what they settled makes room outbound
                    # Waiting for room or for Kafka to take the record, the bridge reads no acks: the
                    # watchdog's clock stops meanwhile, so a slow broker never makes the node look stuck.
                    relay.deaf(time.monotonic())
                    if not self._room():
                        await self._until(self._room)
                    reply = await self.s.writer.request(decoded)
                    reply.arrived = arrived
                    relay.hearing(time.monotonic())
                    self.unanswered += 1
                    self.unanswered_bytes += len(data)
                    self.replies.append(reply)
                    self.queued.set()
                self._acks_read()
        except ConnectionClosedError as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                reason = await self.s.writer.dead_letter_unread(exc.sent.reason)
                metrics.dead_letters.labels("inbound", reason).inc()
            raise

    def _on_ack(self, ack: codec.Ack, raw: bytes, wall: float) -> None:
        """One ack of a run read together (`wall`: when they were read); _acks_read() after the run."""
        outcome = self.s.relay.acked(ack, time.monotonic())
        if not outcome.counted:
            return
        self.uncounted += 1
        if outcome.mismatch is not None:
            self.s.metrics.ack_mismatches.labels(outcome.mismatch).inc()
            # One template per reason: each kind is shown once a minute (logs.HELD), with a count.
            acks_log.warning(MISMATCH_LOG[outcome.mismatch] + ": %.200s", raw)
        elif outcome.settled is not None:
            if outcome.settled.source is None:  # our heartbeat's, say
                self.s.metrics.control_acks.inc()
            elif outcome.settled.timestamp:
                self.delivered.append(wall - outcome.settled.timestamp)
            self.settled = True

    def _acks_read(self) -> None:
        """After a run of acks: one counter update, one histogram call and one wake-up for all of them."""
        if self.uncounted:
            self.s.metrics.acks_from_node.inc(self.uncounted)
            self.uncounted = 0
        if self.delivered:
            self.s.metrics.delivery_out.observe_all(self.delivered)
            self.delivered.clear()
        if self.settled:
            self.settled = False
            self.changed.set()

    async def _replies(self) -> None:
        """Answer the node in the order it sent, each once Kafka stored the record; the answers that
        are ready together go out in one write."""
        while True:
            while not self.replies:
                self.queued.clear()
                await self.queued.wait()
            await self.s.writer.settle(self.replies[0])
            stored, ready = time.monotonic(), [self.replies.popleft()]
            while self.replies and self.replies[0].stored:  # nothing to settle: answered with it
                ready.append(self.replies.popleft())
            await self.ws.send_texts([reply.answer for reply in ready])
            self.unanswered -= len(ready)
            self.unanswered_bytes -= sum(reply.size for reply in ready)
            self.changed.set()
            answered(ready, stored, self.s.metrics)

    # --- stopping -------------------------------------------------------------------------------

    async def _drain(self) -> None:
        """On stop: outbound stops fetching; wait for acks both ways, then close."""
        await self.s.stopping.wait()
        self.changed.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.s.config.shutdown_grace_s):
                await self._until(lambda: not self.s.relay.pending and not self.unanswered)
        await self.ws.close(1001, "bridge shutting down")
