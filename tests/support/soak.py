"""Faults with exact counts, both ways: what was sent, delivered (each counted once), lost and duplicated,
and how long the bridge took to recover. CI runs the short sizes; `make soak` (RESONANCE_SOAK=long)
the long ones, appending one JSON line per fault to RESONANCE_SOAK_RESULTS for bench/soak_table.py.

Inbound, the node keeps the at-least-once contract the README asks of it: it re-sends every message
the bridge has not acked, after each reconnect, until each one is acked (Talker)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resonance_local.embedded import EmbeddedBroker, free_port
from resonance_local.node import Node, NodeServer
from resonance_local.nodeclient import NodeClient
from websockets.exceptions import ConnectionClosed

from .harness import BridgeProcess, Topics, bridge_env, consume, produce, seqs, state_update

LONG = os.environ.get("RESONANCE_SOAK") == "long"
SECONDS = float(os.environ.get("RESONANCE_SOAK_SECONDS") or 60)  # a long fault's duration


def made(kind: str, name: str, **kwargs: Any) -> Node:
    """A node the bridge dials (kind "dial"), or one that dials a listening bridge ("listen"): the
    fault tests hold for both, through the one Session."""
    if kind == "dial":
        return NodeServer(name, port=0, printer=None, **kwargs)
    return NodeClient(name, f"ws://127.0.0.1:{free_port()}/", printer=None, **kwargs)


def endpoint(node: Node) -> str | NodeClient:
    return node if isinstance(node, NodeClient) else f"ws://127.0.0.1:{node.port}"  # type: ignore[attr-defined]


def size(short: int, long: int) -> int:
    return long if LONG else short


def seconds(short: float) -> float:
    return SECONDS if LONG else short


@dataclass
class Tally:
    fault: str
    direction: str  # "to node" or "to Kafka"
    sent: int
    delivered: int  # distinct messages that arrived
    lost: int
    duplicated: int  # arrivals beyond the first of each
    recover_s: float | None = None  # longest time from a fault's end to the next delivery
    note: str = ""

    def publish(self) -> None:
        print(
            f"{self.fault} ({self.direction}): sent {self.sent}, delivered {self.delivered}, "
            f"lost {self.lost}, duplicated {self.duplicated}, "
            f"recovered in {'-' if self.recover_s is None else f'{self.recover_s:.1f}s'}; {self.note}"
        )
        if path := os.environ.get("RESONANCE_SOAK_RESULTS"):
            with open(path, "a") as out:
                out.write(json.dumps(asdict(self)) + "\n")


def tally(fault: str, direction: str, sent: int, arrivals: list[int], **kw: float | str) -> Tally:
    counts = collections.Counter(arrivals)
    lost = len(set(range(sent)) - set(counts))
    return Tally(fault, direction, sent, len(counts), lost, sum(counts.values()) - len(counts), **kw)  # type: ignore[arg-type]


def no_loss(*results: Tally) -> None:
    """Publish each tally (printed, and to the soak table), then hold the promise: nothing lost."""
    for result in results:
        result.publish()
    for result in results:
        assert result.lost == 0, result


def outbound(fault: str, node: Node, sent: int, **kw: float | str) -> Tally:
    return tally(fault, "to node", sent, seqs(node), **kw)


async def inbound(fault: str, broker: EmbeddedBroker, topic: str, sent: int, **kw: float | str) -> Tally:
    def number(record: Any) -> int:
        return int(json.loads(record.value)["id"].removeprefix("n"))

    # every distinct id, however many duplicates come first; what never comes is counted as lost
    records = await consume(broker, topic, sent, timeout=max(60, sent / 100), key=number)
    arrivals = [number(r) for r in records]
    return tally(fault, "to Kafka", sent, arrivals, **kw)


@dataclass
class Talker:
    """A node that sends `count` messages with ids and re-sends what was not acked: after every
    reconnect, and after `patience` seconds without an ack. At most `window` unacked at a time."""

    node: Node
    count: int
    window: int = 200
    patience: float = 5.0
    rate: float = 0.0  # messages a second at most (first sends; re-sends are not held back); 0: any
    acked: set[int] = field(default_factory=set)
    sends: int = 0  # sends - count = re-sends: duplicates the node itself made

    def _take_acks(self) -> None:
        for reply in self.node.replies:
            if reply.get("type") == "ack" and isinstance(reply.get("id"), str):
                self.acked.add(int(reply["id"].removeprefix("n")))
        self.node.replies.clear()

    @staticmethod
    def frame(i: int) -> str:
        return json.dumps(
            {
                "type": "state_update",
                "id": f"n{i}",
                "anchor": "BOLZANO_71",
                "data": {"seq": i, "status": "ok"},
            }
        )

    @property
    def resent(self) -> int:
        return max(0, self.sends - self.count)

    async def run(self) -> None:
        connection = -1
        pending: collections.deque[int] = collections.deque()
        outstanding: dict[int, float] = {}  # sent on this connection, not acked: id -> when
        started, first_sends = time.monotonic(), 0
        while len(self.acked) < self.count:
            self._take_acks()
            for i in [i for i in outstanding if i in self.acked]:
                del outstanding[i]
            if not self.node.connections:
                await asyncio.sleep(0.05)
                continue
            now = time.monotonic()
            if self.node.connections_seen != connection:  # a new connection: re-send all not acked
                connection = self.node.connections_seen
                pending = collections.deque(i for i in range(self.count) if i not in self.acked)
                outstanding.clear()
            late = [i for i, at in outstanding.items() if now - at > self.patience]
            for i in late:
                del outstanding[i]
            pending.extendleft(reversed(late))
            while pending and len(outstanding) < self.window:
                if self.rate and pending[0] >= first_sends and first_sends > (now - started) * self.rate:
                    break  # ahead of the pace
                i = pending.popleft()
                if i in self.acked:
                    continue
                first_sends = max(first_sends, i + 1)
                with contextlib.suppress(ConnectionClosed):
                    if not await self.node.send(self.frame(i)):
                        pending.appendleft(i)
                        break
                    self.sends += 1
                outstanding[i] = now
            await asyncio.sleep(0.01)


async def settle(node: Node, talker: Talker, timeout: float) -> None:
    """Until every message arrived both ways: each record at the node, each of its messages acked."""
    deadline, sent = time.monotonic() + timeout, talker.count
    while len(set(seqs(node))) < sent or len(talker.acked) < sent:
        assert time.monotonic() < deadline, f"{len(set(seqs(node)))} out, {len(talker.acked)} in, of {sent}"
        await asyncio.sleep(0.1)


@dataclass
class Flow:
    bridge: BridgeProcess
    talker: Talker
    talking: asyncio.Task[None]


@contextlib.asynccontextmanager
async def two_way(
    broker: EmbeddedBroker,
    topics: Topics,
    node: Node,
    log: Path,
    sent: int,
    window: int,
    pace: float,
    port: int | None = None,
    **env: str,
) -> AsyncIterator[Flow]:
    """`sent` records in the node's topic and a Talker sending as many back at `pace`, through one
    bridge with `window` in flight (to the node, or to `port`: a proxy in front of it). The Talker
    and the bridge are stopped on exit."""
    await produce(broker, topics.node, (state_update(i) for i in range(sent)))
    endpoint = node if isinstance(node, NodeClient) else f"ws://127.0.0.1:{port or node.port}"  # type: ignore[attr-defined]
    bridge = BridgeProcess(
        bridge_env(broker, topics, endpoint, RESONANCE_MAX_IN_FLIGHT=str(window), **env), log
    )
    talker = Talker(node, sent, window=window, rate=pace)
    talking = asyncio.create_task(talker.run())
    bridge.start()
    try:
        yield Flow(bridge, talker, talking)
    finally:
        talking.cancel()
        bridge.stop()


class Recovery:
    """Time to recover, as the longest stretch without a delivery from start() to stop(): each fault's
    own duration included (a node down, a bridge starting again, a backoff), sampled every 20 ms."""

    def __init__(self, delivered: collections.abc.Callable[[], int]) -> None:
        self.delivered = delivered
        self.longest = 0.0
        self.watch: asyncio.Task[None] | None = None

    def start(self) -> Recovery:
        self.watch = asyncio.create_task(self._sample())
        return self

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.cancel()

    async def _sample(self) -> None:
        count, since = self.delivered(), time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            if (now := self.delivered()) != count:  # a stretch ends only with a delivery
                self.longest = max(self.longest, time.monotonic() - since)
                count, since = now, time.monotonic()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
