"""The bridge's loops that outlive a WebSocket session: heartbeats, offset commits and a Kafka probe.

Each takes only what it uses; the Bridge owns the state and starts them under supervise().
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .backoff import Backoff
from .config import Config
from .metrics import Metrics
from .reader import KafkaReader
from .schedule import every

log = logging.getLogger("resonance.bridge")


async def supervise(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Keep a background loop alive: a bug or an odd error in one tick must not stop heartbeats.
    Restarts back off (1 s doubling to a minute), so a loop that fails at once cannot spin."""
    backoff = Backoff(initial=1.0, maximum=60.0)
    while True:
        started = time.monotonic()
        try:
            await loop()
        except Exception:
            log.exception("%s failed; restarting it", name)
        if time.monotonic() - started > backoff.maximum:
            backoff.reset()
        await asyncio.sleep(backoff.next_delay())


async def heartbeats(config: Config, emit: Callable[[], Coroutine[Any, Any, None]], metrics: Metrics) -> None:
    """Each tick's sends run in a task of their own: a slow broker or node cannot delay the next."""
    emitting: set[asyncio.Task[None]] = set()

    def tick() -> None:
        task = asyncio.create_task(emit())
        emitting.add(task)
        task.add_done_callback(emitting.discard)

    await every(config.heartbeat_interval_s, tick, metrics.heartbeat_drift.set)


async def commits(config: Config, reader: KafkaReader, metrics: Metrics) -> None:
    """Commit what the node acknowledged, on a timer: one commit request covers many acks."""
    while True:
        await asyncio.sleep(config.commit_interval_ms / 1000)
        await reader.commit()
        metrics.consumer_lag.set(await reader.lag())


async def probe(reader: KafkaReader, report: Callable[[bool], None], interval_s: float = 5.0) -> None:
    """A metadata round trip every few seconds: aiokafka reconnects quietly, so without this a
    broker outage would not show in readiness or metrics."""
    while True:
        await asyncio.sleep(interval_s)
        report(await reader.reachable())
