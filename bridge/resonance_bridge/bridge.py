"""One bridge: a node's Kafka topic <-> its WebSocket endpoint, at-least-once both ways.

The Bridge owns what outlives a connection: the Kafka clients, the Relay (the in-flight window and
its rules), the loop over connections with its retry policy, and the loops that run beside the
sessions (heartbeats, offset commits, a Kafka probe). Each connection is a Session (session.py) that
ends as a unit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from . import batches, codec, kafka, security
from .backoff import Failure, Retry, keep_running
from .batches import Undecodable
from .config import CLOSE_BUDGET_S, Config
from .dialer import dial
from .endpoints import Endpoints
from .listener import Listener
from .metrics import Metrics
from .reader import KafkaReader
from .relay import Relay
from .replay import REPLAYING, Replayer
from .schedule import every
from .session import Session, Shared
from .writer import KafkaWriter

log = logging.getLogger("resonance.bridge")


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def _log_heartbeat_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("heartbeat not stored in Kafka: %s", future.exception())


class Bridge:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.relay = Relay(
            config.ack_mode, config.max_in_flight, config.max_frame_bytes, config.ack_timeout_s
        )
        self.stopping = asyncio.Event()
        self.close_by = float("inf")  # monotonic deadline of the whole shutdown, once stopping
        self.session: Session | None = None
        self.listener: Listener | None = None
        self.client: tuple[str, float] | None = None  # a node dialled in: its address, since when
        self.first_attempt = asyncio.Event()  # set once the first connection to the node was tried
        self.kafka_ok = False
        self.reader: KafkaReader | None = None
        self.writer: KafkaWriter | None = None
        self.last_undecodable: str | None = None  # what the heartbeat and the node's status say
        self.replayer: Replayer | None = None
        node_hints = {"where": config.peer, "ca_hint": "RESONANCE_TLS_CA_FILE"}
        node_hints["token_hint"] = security.token_variable(config)
        kafka_hints = {"where": config.bootstrap_servers, "ca_hint": "KAFKA_SSL_CA_FILE"}
        self.node_retry = self._retry(f"node {config.peer}", "websocket", node_hints)
        urls = [config.endpoint, *config.standby_endpoints]
        self.endpoints = Endpoints(urls, config.failover_attempts, config.failback_after_s)
        self.kafka_retries = [
            self._retry(f"kafka {what}", "kafka", kafka_hints) for what in ("producer", "consumer")
        ]
        self.metrics.tls_insecure.set(int(config.tls_insecure_skip_verify))
        self.metrics.in_flight.set_function(lambda: self.relay.pending)  # read at scrape time
        self.metrics.describe(config)

    def stop(self) -> None:
        if not self.stopping.is_set():
            self.close_by = time.monotonic() + self.config.shutdown_grace_s + CLOSE_BUDGET_S
        self.stopping.set()

    def time_left(self, step: float = CLOSE_BUDGET_S) -> float:
        """How long a closing step may take: its own bound, within the shutdown deadline."""
        return min(step, self.close_by - time.monotonic())

    def _retry(self, what: str, side: str, hints: dict[str, str]) -> Retry:
        def counted(failure: Failure) -> None:
            self.metrics.connect_failures.labels(side, failure.code).inc()
            self.metrics.reconnects.labels(side).inc()

        delay = self.config.refused_retry_s
        return Retry(what, self.stopping, log, refused_delay=delay, on_failure=counted, hints=hints)

    def _undecodable(self, batch: Undecodable, stopped: bool) -> None:
        self.metrics.undecodable.labels("stopped" if stopped else "dead_lettered").inc()
        self.last_undecodable = batches.report(batch, stopped)  # logged there, once

    def _replay_asked(self) -> None:
        """A new replay starts with nothing in flight: the session ends, the next one replays."""
        if self.session is not None:
            self.session.replace(1012, REPLAYING)

    def stopped_partitions(self) -> list[str]:
        reader = self.reader
        if reader is None:
            return []
        return [f"{b.source}: {b.error}" for b in reader.stopped.values()]

    def kafka_trouble(self) -> str | None:
        """Why Kafka does not work for this bridge, or None: the probe's round trip failing, the
        consumer failing, records not being stored, or the consumer not progressing."""
        failed = [r.failure for r in self.kafka_retries if r.failure is not None]
        if not self.kafka_ok:
            return f"{failed[0].kind}: {failed[0].message}" if failed else "disconnected"
        consuming = self.kafka_retries[1].failure
        if consuming is not None:
            return f"consumer failing: {consuming.message}"
        storing = self.writer.trouble() if self.writer is not None else None
        return storing or (self.reader.stalled() if self.reader is not None else None)

    def readiness(self) -> tuple[bool, str]:
        trouble = self.kafka_trouble()
        kafka_state = trouble or "connected"
        session = self.session
        silent = session.unresponsive_for() if session is not None else None
        failure, listener, client = self.node_retry.failure, self.listener, self.client
        if listener is not None:  # a node that has not dialled in yet is a state, not a failure
            serving = f"listening on port {listener.port}" if listener.port else "not listening yet"
            who = f"node connected from {client[0]}" if client else "no node connected"
            ws_state = f"{serving}, {who}"
        elif session is None:
            ws_state = f"{failure.kind}: {failure.message}" if failure else "disconnected"
        else:
            ws_state = "connected"
        if silent is not None:
            ws_state = f"unresponsive (nothing heard for {silent:.0f}s)"
        # A listening bridge is ready to be dialled: the Service sends no node to one that is not.
        up = bool(listener.port) if listener is not None else session is not None
        ready = trouble is None and up and silent is None
        why = f"kafka {kafka_state}, websocket {ws_state}"
        stopped = self.stopped_partitions()
        if stopped:  # RESONANCE_ON_UNDECODABLE=stop asked for this to count
            ready, why = False, f"{why}; undecodable batch, partition stopped: {'; '.join(stopped)}"
        return ready, why

    async def run(self) -> None:
        """Relay until stop(); then drain in-flight acks for up to the grace period, commit, close,
        all within the shutdown grace plus CLOSE_BUDGET_S."""
        cfg, (producing, consuming) = self.config, self.kafka_retries

        async def refusal() -> BaseException | None:
            return await security.kafka_trouble(cfg)

        async with (
            kafka.started(lambda: kafka.producer(cfg), producing, self.time_left, refusal) as producer,
            kafka.started(lambda: kafka.consumer(cfg), consuming, self.time_left, refusal) as consumer,
        ):
            if producer is None or consumer is None:
                return  # stopped before Kafka was reachable
            window, retry = self.relay.window, self.kafka_retries[1]
            factory = functools.partial(kafka.consumer, cfg)  # a replacement, should this one fail for good
            reader = KafkaReader(consumer, window, cfg, retry, self._undecodable, factory)
            self.reader = reader
            writer = self.writer = KafkaWriter(cfg, producer, self.stopping)
            shared = Shared(cfg, self.metrics, self.relay, reader, writer, self.stopping)
            if cfg.replay_file:
                self.replayer = Replayer(cfg, writer)
                self.replayer.read()  # before the first session: a request found now ends none
                self.replayer.on_request = self._replay_asked
                reader.before_fetch = self.replayer.before_fetch
            self.kafka_ok = True
            self.metrics.kafka_connected.set(1)
            loops = {
                "heartbeats": lambda: self._heartbeats(writer),
                "commits": lambda: self._commits(reader),
                "kafka probe": lambda: self._probe(reader),
            }
            if self.replayer is not None:
                loops["replay control"] = self.replayer.watch
            background = [asyncio.create_task(keep_running(name, loop, log)) for name, loop in loops.items()]
            try:
                await self._connections(shared)
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await writer.close()
                await kafka.bounded(reader.commit(), "final commit", self.time_left(2.0))
                if reader.consumer is not consumer:  # a replacement: closed here, the first one below
                    await kafka.bounded(reader.consumer.stop(), "kafka consumer close", self.time_left())

    async def _connections(self, shared: Shared) -> None:
        if self.config.listen:
            self.listener = Listener(self, shared)
            await self.listener.run()
        else:
            await dial(self, shared)

    # --- the loops that outlive a session (kept running by keep_running) ---------------------------

    async def _heartbeats(self, writer: KafkaWriter) -> None:
        """Each tick's sends run in a task of their own: a slow broker or node cannot delay the next."""
        beating: set[asyncio.Task[None]] = set()
        # The first beat waits for the first try at the node, so that it does not report
        # "websocket_connected: false" just because it came first: monitoring would flap at every start.
        await self.first_attempt.wait()

        def tick() -> None:
            task = asyncio.create_task(self._heartbeat(writer))
            beating.add(task)
            task.add_done_callback(beating.discard)

        await every(self.config.heartbeat_interval_s, tick, self.metrics.heartbeat_drift.set)

    async def _commits(self, reader: KafkaReader) -> None:
        """Commit what is done, on a timer: one commit request covers many acks."""
        while True:
            await asyncio.sleep(self.config.commit_interval_ms / 1000)
            await reader.commit()
            self.metrics.consumer_lag.set(await reader.lag())

    async def _probe(self, reader: KafkaReader, interval_s: float = 5.0) -> None:
        """A metadata round trip every few seconds: aiokafka reconnects quietly, so without this a
        broker outage would not show in readiness or metrics."""
        while True:
            await asyncio.sleep(interval_s)
            ok = await reader.reachable()
            if ok and not self.kafka_ok:
                self.metrics.kafka_reconnects.inc()
            if ok != self.kafka_ok:
                log.warning("kafka %s", "reachable again" if ok else "unreachable")
            self.kafka_ok = ok
            self.metrics.kafka_connected.set(int(ok))

    def health(self, connected: bool) -> dict[str, Any]:
        """What the heartbeat record adds to the guide's heartbeat: the data plane's health, which the
        operator writes to the node's status (README, "Heartbeat records")."""
        m, failure = self.metrics, self.node_retry.failure
        drift = m.value("resonance_heartbeat_drift_seconds")
        return {
            "node": self.config.node,
            "namespace": self.config.namespace or None,
            "uid": self.config.node_uid or None,
            "websocket_connected": connected,
            "mode": "listen" if self.config.listen else "dial",
            "endpoint": None if self.config.listen else self.endpoints.current,
            "standby": self.endpoints.on_standby,
            "client": self.client[0] if self.client else None,
            "connected_since": _iso(self.client[1]) if self.client else None,
            "websocket_error": None if connected or failure is None else f"{failure.kind}: {failure.message}",
            "kafka_connected": self.kafka_trouble() is None,
            "in_flight": self.relay.pending,
            "lag": int(m.value("resonance_consumer_lag")),
            "relayed_out": int(m.value("resonance_messages_relayed_total", direction="outbound")),
            "relayed_in": int(m.value("resonance_messages_relayed_total", direction="inbound")),
            "dead_letters": int(m.total("resonance_dead_letters_total")),
            "undecodable_batches": int(m.total("resonance_undecodable_batches_total")),
            "undecodable": self.last_undecodable,
            "stopped_partitions": self.stopped_partitions(),
            "measured_frequency_hz": round(1 / (self.config.heartbeat_interval_s + drift), 6),
            "drift_seconds": round(drift, 3),
        }

    async def _heartbeat(self, writer: KafkaWriter) -> None:
        cfg = self.config
        body = codec.heartbeat(cfg.anchor, cfg.frequency_hz, cfg.s_roi)
        self.metrics.heartbeats.inc()
        self.metrics.last_heartbeat.set(time.time())
        session = self.session
        if session is not None:
            try:
                await session.send_control(body)
            except Exception as exc:  # a closing connection: the beat still goes to Kafka
                log.debug("heartbeat not sent to the node: %r", exc)
        # Whether a session is up now, not when this beat began: a send to a closing connection can
        # outlast it, and a beat said "connected" after the refusal that followed (a flaky test).
        record = {**body, **self.health(self.session is not None), **self.metrics.delivery_period()}
        if self.replayer is not None:
            record["replay"] = self.replayer.report(self.reader)
        future = await writer.send(
            cfg.heartbeat_topic, codec.encode(record), kafka.headers(cfg, **{"resonance-type": "heartbeat"})
        )
        future.add_done_callback(_log_heartbeat_failure)
