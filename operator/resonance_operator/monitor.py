"""Each node's status, kept current from two sources: its Deployment (after every reconcile) and its
bridge's heartbeats (read from the heartbeat topic of every Kafka cluster in use).

A status patch goes out at once when a condition changes or the Deployment side moved; one that
only refreshes lastHeartbeatTime and status.bridge waits for a heartbeat period (at least
MIN_PATCH_INTERVAL_S) since the node's last patch, so 1,000 beating nodes do not flood the API
server. A timer turns HeartbeatFresh False for bridges that went silent. Ready turning False posts a
Warning Event naming why; turning True, a Normal one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from resonance_bridge import security

from . import health, metrics, mounts, status
from .model import Node
from .settings import NO_SECURITY, Settings
from .storage import Kube, KubeError

log = logging.getLogger("resonance.operator.monitor")

MIN_PATCH_INTERVAL_S = 5.0
Key = tuple[str, str]  # (namespace, name)


def _iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Tracked:
    body: dict[str, Any]  # the node as last reconciled (for its identity in Events)
    node: Node
    deployment: dict[str, Any] | None = None
    error: str | None = None
    reason: str = "ReconcileFailed"  # the error's kind (status.NEXT)
    written: dict[str, Any] = field(default_factory=dict)  # the status as last patched (or found)
    patched_at: float = float("-inf")
    ever_ready: bool = False  # a node that never was Ready is starting, not failing
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_KEPT = ("name", "namespace", "uid", "generation")  # of a node's metadata: its Events' involvedObject


class Monitor:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.nodes: dict[Key, Tracked] = {}
        self.beats: dict[Key, health.Beat] = {}  # kept even for nodes not reconciled yet
        self.consumers: dict[str, asyncio.Task[None]] = {}
        self.patches = 0  # status patches sent (the rate limit's measure)
        self.timer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.timer = asyncio.create_task(self._tick())
        self._consume_from(self.settings.kafka_bootstrap_servers)

    async def stop(self) -> None:
        tasks = [t for t in (self.timer, *self.consumers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- inputs -----------------------------------------------------------------------------------

    async def observe(
        self,
        body: dict[str, Any],
        deployment: dict[str, Any] | None,
        error: str | None = None,
        reason: str = "ReconcileFailed",
    ) -> bool:
        """After a reconcile: the node's spec and Deployment (or the error); True if it is Ready."""
        node = Node.from_body(body)
        key = (node.namespace, node.name)
        tracked = self.nodes.get(key)
        if tracked is None:
            tracked = self.nodes[key] = Tracked(body, node, written=dict(body.get("status") or {}))
        # Only what the status and its Events read: whole bodies cost ~36 KB a node (36 MB at 1,000).
        body = {
            "metadata": {k: v for k, v in body["metadata"].items() if k in _KEPT},
            "status": body.get("status"),
        }
        if deployment is not None:
            generation = deployment["metadata"].get("generation", 1)
            deployment = {"metadata": {"generation": generation}, "status": deployment.get("status") or {}}
        tracked.body, tracked.node, tracked.deployment = body, node, deployment
        tracked.error, tracked.reason = error, reason
        bootstrap = (node.spec.kafka and node.spec.kafka.bootstrap_servers) or None
        # Another Kafka's TLS or SASL would need the node's Secrets, which the operator never reads.
        own = mounts.kafka_security(node.spec, NO_SECURITY, "")
        # A refused node's Kafka may be one the operator must not dial (policy.py): no consumer for it.
        plain = own.protocol == "PLAINTEXT" or bootstrap in (None, self.settings.kafka_bootstrap_servers)
        if plain and error is None:
            self._consume_from(bootstrap)
        await self._write(tracked)
        return status.states(tracked.written).get("Ready", ("",))[0] == "True"

    def forget(self, namespace: str, name: str) -> None:
        self.nodes.pop((namespace, name), None)
        self.beats.pop((namespace, name), None)

    async def heartbeat(self, key: Key, beat: health.Beat) -> None:
        self.beats[key] = beat
        tracked = self.nodes.get(key)
        metrics.HEARTBEATS.labels("used" if tracked is not None else "ignored").inc()
        if tracked is not None:
            await self._write(tracked)

    def statuses(self) -> list[dict[str, Any]]:
        return [tracked.written for tracked in list(self.nodes.values())]

    # --- the status -------------------------------------------------------------------------------

    async def _write(self, tracked: Tracked) -> None:
        async with tracked.lock:
            node, clock = tracked.node, time.monotonic()
            beat = self.beats.get((node.namespace, node.name))
            new = status.node_status(
                node,
                tracked.deployment,
                tracked.written,
                _iso(time.time()),
                tracked.error,
                beat,
                clock,
                tracked.reason,
            )
            old = tracked.written
            if status.same(new, old) and set(old) <= set(new):
                return
            transition = status.states(new) != status.states(old)
            beating = ("lastHeartbeatTime", "bridge", "conditions")
            moved = {k: v for k, v in new.items() if k not in beating} != {
                k: v for k, v in old.items() if k not in beating
            }
            interval = max(MIN_PATCH_INTERVAL_S, 1 / node.spec.frequency_hz)
            if not transition and not moved and clock - tracked.patched_at < interval:
                return  # only the heartbeat's numbers moved: they wait for the node's next slot
            try:
                await self.kube.patch_node_status(node.namespace, node.name, new)
            except KubeError as exc:
                log.warning("status of %s/%s not written: %s", node.namespace, node.name, exc)
                metrics.PATCHES.labels("error").inc()
                return
            self.patches += 1
            metrics.PATCHES.labels(
                "transition" if transition else "deployment" if moved else "heartbeat"
            ).inc()
            tracked.written, tracked.patched_at = new, clock
            tracked.ever_ready |= status.states(new).get("Ready", ("",))[0] == "True"
        await self._announce(tracked, old, new)

    async def _announce(self, tracked: Tracked, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Events for Ready's transitions, and for a new reason while not Ready (the Deployment's probe
        often says "not ready" a moment before the heartbeat says why): what a person on call reads in
        `kubectl get events`."""
        before, after = status.states(old).get("Ready"), status.states(new).get("Ready")
        if after is None or before == after:
            return
        ready = next(c for c in new["conditions"] if c["type"] == "Ready")
        if after[0] == "True":
            kind, reason = "Normal", "Ready"
        elif before is not None and tracked.ever_ready:
            kind, reason = "Warning", "NotReady"
        else:
            return  # not ready yet, as a new node is: no news
        with contextlib.suppress(KubeError):
            await self.kube.post_event(tracked.body, kind, reason, f"{ready['reason']}: {ready['message']}")

    async def _tick(self, every: float = 1.0) -> None:
        """HeartbeatFresh turns False by itself: a dead bridge sends nothing that would say so."""
        while True:
            await asyncio.sleep(every)
            for tracked in list(self.nodes.values()):
                with contextlib.suppress(Exception):  # one node's trouble must not stop the others'
                    await self._write(tracked)

    # --- the heartbeat topics ---------------------------------------------------------------------

    def _consume_from(self, bootstrap: str | None) -> None:
        if bootstrap and bootstrap not in self.consumers:
            self.consumers[bootstrap] = asyncio.create_task(self._consume(bootstrap))

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
                # The default Kafka with the operator's own security; others are plaintext (above).
                **(
                    security.kafka(self.settings)
                    if bootstrap == self.settings.kafka_bootstrap_servers
                    else {}
                ),
            )
            try:
                await consumer.start()
                delay = 1.0
                while True:
                    for records in (await consumer.getmany(timeout_ms=1000)).values():
                        for record in records:
                            await self._record(record)
            except (KafkaError, OSError) as exc:
                log.warning("heartbeats from %s: %s; retrying in %.0fs", bootstrap, exc, delay)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 5)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 60.0)

    async def _record(self, record: Any) -> None:
        """One heartbeat record, its age taken from its Kafka timestamp (a replayed old beat is old)."""
        wall = min(time.time(), (record.timestamp or 0) / 1000) or time.time()
        parsed = health.parse(record.value, time.monotonic() - (time.time() - wall), _iso(wall))
        if parsed is None:
            metrics.HEARTBEATS.labels("ignored").inc()
        else:
            await self.heartbeat(*parsed)
