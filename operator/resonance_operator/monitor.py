"""Each node's status, kept current from two sources: its Deployment (after every reconcile) and its
bridge's heartbeats (read from the heartbeat topic of every Kafka cluster in use: heartbeats.py).

A heartbeat counts for a node only if it names the node's namespace, name and uid, and was read from
the Kafka the node's bridge writes to: anyone may name a Kafka of their own in a node and write to it
whatever they like, and a uid is no secret. Beats of nodes not reconciled yet are held, a bounded
number of them, for the node to claim when it is.

A status patch goes out at once when a condition changes or the Deployment side moved; one that only
refreshes lastHeartbeatTime and status.bridge waits for (nine tenths of) a heartbeat period since the
node's last patch, MIN_PATCH_INTERVAL_S at least, and for the refresh budget all nodes share
(tracked.REFRESHES_PER_S). Heartbeats' writes run in WRITERS tasks, beside the consumer that reads
them. A timer turns HeartbeatFresh False for bridges gone silent, looking only at nodes whose beat
went stale. Ready turning False posts a Warning Event naming why; turning True, a Normal one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any

from . import builders, health, metrics, mounts, status
from .heartbeats import Consumers, normalized
from .model import Node
from .settings import NO_SECURITY, Settings
from .storage import Kube, KubeError
from .tracked import REFRESHES_PER_S, Budget, Heard, Tracked, iso, slim

log = logging.getLogger("resonance.operator.monitor")

MIN_PATCH_INTERVAL_S = 5.0
WRITERS = 16  # status writes in flight for heartbeats (the reconciles' own are apart)
# Beats held for nodes not reconciled yet (an operator starting reads beats before it has listed the
# nodes): room for thousands of nodes, while a flood of made-up names only pushes the oldest out.
MAX_HELD = 4096
Key = tuple[str, str]  # (namespace, name)


_KEPT = ("name", "namespace", "uid", "generation")  # of a node's metadata: its Events' involvedObject


class Monitor:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.nodes: dict[Key, Tracked] = {}
        self.beats: dict[Key, Heard] = {}  # the latest counted beat of each tracked node
        self.replays: dict[Key, tuple[str, str | None]] = {}  # each node's request (replays.py)
        self.held: OrderedDict[tuple[str, str, str, str], Heard] = OrderedDict()  # of unknown nodes
        self.consumers = Consumers(settings, self._record)
        self.refreshes = Budget(REFRESHES_PER_S)  # patches that only refresh the numbers
        self.queue: asyncio.Queue[Tracked] = asyncio.Queue()  # status writes due for heartbeats
        self.writers: list[asyncio.Task[None]] = []
        self.timer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.timer = asyncio.create_task(self._tick())
        self.writers = [asyncio.create_task(self._writer()) for _ in range(WRITERS)]
        self.consumers.want(())

    async def stop(self) -> None:
        tasks = [*self.writers, *([self.timer] if self.timer is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.consumers.stop()

    # --- inputs -----------------------------------------------------------------------------------

    def seen(self, namespace: str, name: str, version: str | None) -> bool:
        """Whether the node's last reconcile already observed this version of its Deployment (its
        own write, say): nothing for another reconcile to do."""
        tracked = self.nodes.get((namespace, name))
        observed = (tracked.deployment or {}).get("metadata", {}) if tracked is not None else {}
        return version is not None and observed.get("resourceVersion") == version

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
        before = None if tracked is None else self._wanted(tracked)
        if tracked is None:
            written = dict(body.get("status") or {})
            tracked = self.nodes[key] = Tracked(body, node, written=written)
            tracked.handled = written.get("observedGeneration") or 0
        held = self.held.pop((*key, node.uid, self._source(node)), None)
        if held is not None and key not in self.beats:
            self.beats[key] = held
        # Only what the status and its Events read: whole bodies cost ~36 KB a node (36 MB at 1,000).
        body = {
            "metadata": {k: v for k, v in body["metadata"].items() if k in _KEPT},
            "status": body.get("status"),
        }
        tracked.body, tracked.node, tracked.deployment = body, node, slim(deployment)
        tracked.error, tracked.reason = error, reason
        if error is None or reason == "NotAllowed":  # done, or refused until the spec changes
            tracked.handled = node.generation
        now = self._wanted(tracked)
        # Only a Kafka not read yet, or one the node left, needs a look at every node (1,000 of them).
        if (now is not None and now not in self.consumers.running) or before not in (None, now):
            self.consumers.want(self._read())
        await self._write(tracked)
        return status.states(tracked.written).get("Ready", ("",))[0] == "True"

    async def deployment_changed(self, namespace: str, name: str, deployment: dict[str, Any]) -> bool:
        """The node's Deployment changed but is still as its spec asks (its status moved): carry it
        into the node's status without a reconcile. False when the node is not known to be in order."""
        tracked = self.nodes.get((namespace, name))
        if tracked is None or tracked.error is not None:
            return False
        if not builders.is_subset(builders.deployment(tracked.node, self.settings), deployment):
            return False  # edited, or the spec changed: a reconcile's
        tracked.deployment = slim(deployment)
        await self._write(tracked)
        return True

    async def replay(self, namespace: str, name: str, decided: tuple[str, str | None] | None) -> None:
        """The node's replay request as the operator decided it (replays.py): into its status."""
        key = (namespace, name)
        if decided is None:
            self.replays.pop(key, None)
        else:
            self.replays[key] = decided
        if (tracked := self.nodes.get(key)) is not None:
            await self._write(tracked)

    def forget(self, namespace: str, name: str) -> None:
        self.replays.pop((namespace, name), None)
        tracked = self.nodes.pop((namespace, name), None)
        self.beats.pop((namespace, name), None)
        if tracked is not None and self._wanted(tracked) not in (None, self.consumers.default):
            self.consumers.want(self._read())

    async def heartbeat(self, bootstrap: str, identity: health.Identity, beat: health.Beat) -> None:
        """A beat read from `bootstrap`, naming the node `identity`."""
        namespace, name, uid = identity
        key, heard = (namespace, name), Heard(uid, bootstrap, beat)
        tracked = self.nodes.get(key)
        if tracked is None:
            metrics.HEARTBEATS.labels("ignored").inc()
            if uid:  # no uid matches no node
                self.held[(*key, uid, bootstrap)] = heard
                self.held.move_to_end((*key, uid, bootstrap))
                while len(self.held) > MAX_HELD:
                    self.held.popitem(last=False)
            return
        reason = self._rejected(tracked.node, heard)
        if reason is not None:
            metrics.HEARTBEATS.labels("rejected").inc()
            metrics.REJECTED.labels(reason).inc()
            return
        self.beats[key] = heard
        metrics.HEARTBEATS.labels("used").inc()
        self._soon(tracked)

    def _soon(self, tracked: Tracked) -> None:
        """Queue the node's status write for one of WRITERS tasks: the beats are read on meanwhile
        (10,000 nodes' first beats are 10,000 patches, ~10 ms each), and a node's beats that arrive
        while its write waits make that one write, of the latest."""
        if not tracked.due:
            tracked.due = True
            self.queue.put_nowait(tracked)

    async def _writer(self) -> None:
        while True:
            tracked = await self.queue.get()
            tracked.due = False
            with contextlib.suppress(Exception):  # one node's trouble must not stop the others'
                await self._write(tracked)

    def _source(self, node: Node) -> str:
        """The Kafka the node's bridge writes its heartbeats to."""
        named = node.spec.kafka and node.spec.kafka.bootstrap_servers
        return normalized(named) if named else self.consumers.default

    def _rejected(self, node: Node, heard: Heard) -> str | None:
        """Why the beat does not count for the node, or None. The Kafka first: a record on a Kafka the
        node's bridge does not write to was written by someone else, whatever it says."""
        if heard.bootstrap != self._source(node):
            return "wrong_bootstrap"
        if heard.uid != node.uid:
            return "uid_mismatch"
        return None

    def _wants(self, node: Node) -> str | None:
        """The Kafka whose heartbeats the node needs read, if the operator can read them: another
        Kafka's TLS or SASL would need the node's Secrets, which the operator never reads."""
        source = self._source(node)
        own = mounts.kafka_security(node.spec, NO_SECURITY, "")
        return source if own.protocol == "PLAINTEXT" or source == self.consumers.default else None

    def _wanted(self, tracked: Tracked) -> str | None:
        """_wants, but for a node refused by policy: its Kafka may be one the operator must not dial."""
        refused = tracked.error is not None and tracked.reason == "NotAllowed"
        return None if refused else self._wants(tracked.node)

    def _read(self) -> set[str]:
        """The Kafkas whose heartbeats the tracked nodes need read."""
        return {s for tracked in list(self.nodes.values()) if (s := self._wanted(tracked))}

    def statuses(self) -> list[dict[str, Any]]:
        return [tracked.written for tracked in list(self.nodes.values())]

    # --- the status -------------------------------------------------------------------------------

    async def _write(self, tracked: Tracked) -> None:
        async with tracked.lock:
            node, clock = tracked.node, time.monotonic()
            heard = self.beats.get((node.namespace, node.name))
            # A beat counted before the node's spec named another Kafka, or before it was recreated
            # (a new uid), is not its bridge's any more.
            beat = heard.beat if heard is not None and self._rejected(node, heard) is None else None
            tracked.stale_at = health.stale_at(beat, clock, node.spec.frequency_hz)
            new = status.node_status(
                node,
                tracked.deployment,
                tracked.written,
                iso(time.time()),
                tracked.error,
                beat,
                clock,
                tracked.reason,
                tracked.handled,
                self.replays.get((node.namespace, node.name)),
            )
            old = tracked.written
            if status.same(new, old) and set(old) <= set(new):
                return
            # An endpoint switch is news too: its Event must not wait for the node's next patch slot.
            transition = (status.states(new), status.endpoint(new)) != (
                status.states(old),
                status.endpoint(old),
            )
            beating = ("lastHeartbeatTime", "bridge", "conditions")
            moved = {k: v for k, v in new.items() if k not in beating} != {
                k: v for k, v in old.items() if k not in beating
            }
            # A period less a tenth: the next beat, however it jitters, is due its refresh.
            interval = max(MIN_PATCH_INTERVAL_S, 0.9 / node.spec.frequency_hz)
            if (
                not transition
                and not moved
                and (clock - tracked.patched_at < interval or not self.refreshes.take(clock))
            ):
                return  # only the heartbeat's numbers moved: they wait for the node's next slot
            try:
                await self.kube.patch_node_status(node.namespace, node.name, new)
            except KubeError as exc:
                log.warning("status of %s/%s not written: %s", node.namespace, node.name, exc)
                metrics.PATCHES.labels("error").inc()
                tracked.stale_at = clock + 1.0  # tried again by the timer
                return
            metrics.PATCHES.labels(
                "transition" if transition else "deployment" if moved else "heartbeat"
            ).inc()
            tracked.written, tracked.patched_at = new, clock
            tracked.ever_ready |= status.states(new).get("Ready", ("",))[0] == "True"
        # What a person on call reads in `kubectl get events`.
        for kind, reason, message in status.announcements(old, new, tracked.ever_ready):
            with contextlib.suppress(KubeError):
                await self.kube.post_event(tracked.body, kind, reason, message)

    async def _tick(self, every: float = 1.0) -> None:
        """HeartbeatFresh turns False by itself: a dead bridge sends nothing that would say so. Only
        the nodes whose beat went stale (or whose patch failed) are looked at: not 10,000 a second."""
        while True:
            await asyncio.sleep(every)
            clock = time.monotonic()
            for tracked in [t for t in self.nodes.values() if t.stale_at <= clock]:
                with contextlib.suppress(Exception):  # one node's trouble must not stop the others'
                    await self._write(tracked)

    # --- the heartbeat topics ---------------------------------------------------------------------

    async def _record(self, bootstrap: str, record: Any) -> None:
        """One heartbeat record, its age taken from its Kafka timestamp (a replayed old beat is old)."""
        wall = min(time.time(), (record.timestamp or 0) / 1000) or time.time()
        parsed = health.parse(record.value, time.monotonic() - (time.time() - wall), iso(wall))
        if parsed is None:
            metrics.HEARTBEATS.labels("ignored").inc()
        else:
            await self.heartbeat(bootstrap, *parsed)
