"""The heartbeat topics: one consumer for each Kafka that some node's bridge writes to, and only while
one does. The default Kafka's consumer always runs; another's starts when a node names that Kafka and
stops when no node names it any more (node deleted, or its spec moved to another Kafka), so a Kafka a
node once named is not read, nor connected to, for the rest of the operator's life.

Each record goes to the handler with the Kafka it came from: a heartbeat counts only for a node whose
bridge writes there (monitor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from resonance_bridge import security

from . import metrics
from .settings import Settings

log = logging.getLogger("resonance.operator.heartbeats")

Handler = Callable[[str, Any], Awaitable[None]]  # (bootstrap, record)


def normalized(bootstrap: str) -> str:
    """One spelling of a broker list ("b:1, a:1" is "a:1,b:1"): the consumer's key, and what a node's
    bootstrap is compared with."""
    return ",".join(sorted({part.strip() for part in bootstrap.split(",") if part.strip()}))


class Consumers:
    def __init__(self, settings: Settings, handle: Handler) -> None:
        self.settings = settings
        self.handle = handle
        self.default = normalized(settings.kafka_bootstrap_servers)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.stopping: set[asyncio.Task[None]] = set()  # cancelled, still closing their consumer

    def want(self, bootstraps: Iterable[str]) -> None:
        """Consume from these and the default Kafka; stop consuming from any other."""
        wanted = {self.default, *bootstraps}
        for bootstrap in sorted(wanted - set(self.running)):
            self.running[bootstrap] = asyncio.create_task(self._consume(bootstrap))
        for bootstrap in sorted(set(self.running) - wanted):
            task = self.running.pop(bootstrap)
            task.cancel()  # its consumer is stopped as the task ends (_consume's finally)
            self.stopping.add(task)
            task.add_done_callback(self.stopping.discard)
            log.info("heartbeats from %s: no node names it any more: its consumer stops", bootstrap)
        metrics.CONSUMERS.set(len(self.running))

    async def stop(self) -> None:
        tasks = [*self.running.values(), *self.stopping]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.running.clear()

    async def _consume(self, bootstrap: str) -> None:
        """Every partition of the heartbeat topic (no consumer group: each operator replica reads every
        beat), from its end (older beats say nothing about now), reconnecting with backoff."""
        delay = 1.0
        while True:
            consumer = AIOKafkaConsumer(
                self.settings.heartbeat_topic,
                bootstrap_servers=bootstrap,
                client_id="resonance-operator",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                fetch_max_wait_ms=500,
                # The default Kafka with the operator's own security; others are plaintext (monitor.py).
                **(security.kafka(self.settings) if bootstrap == self.default else {}),
            )
            try:
                await consumer.start()
                delay = 1.0
                while True:
                    for records in (await consumer.getmany(timeout_ms=1000)).values():
                        for record in records:
                            await self.handle(bootstrap, record)
            except (KafkaError, OSError) as exc:
                log.warning("heartbeats from %s: %s; retrying in %.0fs", bootstrap, exc, delay)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 5)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 60.0)
