"""Test helpers that drive real processes and real Kafka: no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from resonance_local.embedded import EMBEDDED_CLIENT_ENV, EmbeddedBroker, free_port
from resonance_local.node import Node
from resonance_local.nodeclient import NodeClient

from .poll import until


class SecureBroker(EmbeddedBroker):
    """The embedded broker, with the settings the tests' own clients need to reach it (TLS through a
    proxy: tansu itself speaks no TLS to aiokafka)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.security: dict[str, Any] = {}


def security_of(broker: EmbeddedBroker) -> dict[str, Any]:
    return broker.security if isinstance(broker, SecureBroker) else {}


@dataclass(frozen=True)
class Topics:
    node: str
    inbound: str
    heartbeats: str
    deadletter: str
    group: str

    @classmethod
    def fresh(cls) -> Topics:
        """Names no other test uses, so tests never see each other's records."""
        suffix = uuid.uuid4().hex[:8]
        return cls(
            f"node.{suffix}",
            f"inbound.{suffix}",
            f"heartbeats.{suffix}",
            f"deadletter.{suffix}",
            f"group-{suffix}",
        )

    async def create(self, broker: EmbeddedBroker, partitions: int = 1) -> None:
        """Single-partition topics: one node's records keep one order, as keying by anchor gives.
        The node's topic may have more partitions, as a producer keyed otherwise would use."""
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, **security_of(broker))
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(t, partitions if t == self.node else 1, 1) for t in self.all()]
            )
        finally:
            await admin.close()

    def all(self) -> list[str]:
        return [self.node, self.inbound, self.heartbeats, self.deadletter]


def bridge_env(
    broker: EmbeddedBroker, topics: Topics, endpoint: str | NodeClient, **overrides: str
) -> dict[str, str]:
    """A bridge that dials `endpoint`, or that a NodeClient dials (listening where it dials, any node
    welcome unless the overrides say otherwise)."""
    if isinstance(endpoint, NodeClient):
        where = urlsplit(endpoint.url)
        link = {"RESONANCE_LISTEN": f"{where.hostname}:{where.port}", "RESONANCE_LISTEN_ANONYMOUS": "true"}
    else:
        link = {"RESONANCE_ENDPOINT": endpoint}
    env = {
        "RESONANCE_NODE": "testnode",
        **link,
        "RESONANCE_TOPIC": topics.node,
        "RESONANCE_ANCHOR": "BOLZANO_71",
        "RESONANCE_INBOUND_TOPIC": topics.inbound,
        "RESONANCE_HEARTBEAT_TOPIC": topics.heartbeats,
        "RESONANCE_DEADLETTER_TOPIC": topics.deadletter,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_GROUP_ID": topics.group,
        "RESONANCE_HTTP_PORT": str(free_port()),
        **EMBEDDED_CLIENT_ENV,
        "KAFKA_COMMIT_INTERVAL_MS": "100",
        "RESONANCE_FREQUENCY_HZ": "0.1",
    }
    env.update(overrides)
    return env


class BridgeProcess:
    """`resonance bridge` as a real child process, as the operator will run it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = int(env["RESONANCE_HTTP_PORT"])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BridgeProcess:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "resonance_bridge"],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def readyz(self) -> str:
        """What /readyz says; empty while the bridge does not listen (yet)."""
        try:
            return self.get("/readyz")[1]
        except OSError:
            return ""

    def status(self, path: str) -> int:
        """The HTTP status of path; 0 while the bridge does not listen (yet)."""
        try:
            return self.get(path)[0]
        except OSError:
            return 0

    def metric(self, name: str, **labels: str) -> float:
        """One sample from /metrics; 0 if the bridge does not expose it (yet)."""
        # The exposition format lists labels sorted by name.
        wanted = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
        )
        try:
            text = self.get("/metrics")[1]
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def wait_ready(self, timeout: float = 30) -> None:
        await until(self._ready, timeout, lambda: f"the bridge to be ready; log:\n{self.output()}")

    def _ready(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.output()
        return self.status("/readyz") == 200

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


def state_update(seq: int) -> bytes:
    return json.dumps(
        {
            "type": "state_update",
            "timestamp": "2026-01-13T02:00:00+00:00",
            "anchor": "BOLZANO_71",
            "data": {"frequency": 0.043, "s_roi": 0.502, "status": "operational", "seq": seq},
        }
    ).encode()


def seqs(node: Node) -> list[int]:
    """The seq of each state_update the node received, in arrival order."""
    return [m["data"]["seq"] for m in node.received if m["type"] == "state_update"]


async def produce(broker: EmbeddedBroker, topic: str, values: Iterable[bytes]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        **security_of(broker),
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value) for value in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def create_topic(broker: EmbeddedBroker, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, **security_of(broker))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def an_hour_apart(
    broker: EmbeddedBroker, topic: str, old: int, recent: int, partitions: int = 1
) -> int:
    """In each partition, `old` state_updates stamped two hours ago, then `recent` an hour later (seq
    numbers running on from partition to partition); the later hour, in ms."""
    base = int(time.time() * 1000) - 2 * 3600 * 1000
    hour = base + 3600 * 1000
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for seq in range(partitions * (old + recent)):
            i = seq % (old + recent)
            stamp = (base if i < old else hour) + i
            await producer.send(topic, state_update(seq), partition=seq // (old + recent), timestamp_ms=stamp)
        await producer.flush()
    finally:
        await producer.stop()
    return hour


async def produce_to(
    broker: EmbeddedBroker, topic: str, records: dict[int, Iterable[int]], codec: str | None = None
) -> None:
    """state_updates by partition, from one producer with this compression; each partition's are
    sent and flushed as a batch."""
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, enable_idempotence=False, compression_type=codec
    )
    await producer.start()
    try:
        for partition, numbers in records.items():
            for seq in numbers:
                await producer.send(topic, state_update(seq), partition=partition)
            await producer.flush()
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def written(
    *records: tuple[EmbeddedBroker, bytes], topic: str = "resonance.heartbeats"
) -> AsyncIterator[None]:
    """Each record written to its broker's topic (the heartbeats) twice a second, until the block ends:
    a test playing bridges, or someone forging them."""

    async def write() -> None:
        while True:
            for broker, value in records:
                await produce(broker, topic, [value])
            await asyncio.sleep(0.5)

    task = asyncio.create_task(write())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def everything(broker: EmbeddedBroker, topic: str) -> list[bytes]:
    """Every record value partition 0 of the topic holds now: read until a fetch comes back empty."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        while batch := await consumer.getmany(timeout_ms=100):
            values += [r.value for records in batch.values() for r in records]
        return values
    finally:
        await consumer.stop()


async def consume(
    broker: EmbeddedBroker,
    topic: str,
    count: int,
    timeout: float = 30,
    key: Callable[[Any], object] | None = None,
) -> list[Any]:
    """Read `count` records of a topic from the beginning, partition by partition (fails if fewer
    arrive). Tests make single-partition topics, so order is the topic's; all partitions are read
    because a broker may have auto-created the topic with more before the test created it.
    With `key`, `count` distinct keys: duplicates early in the log must not end the read before
    the last distinct record is reached."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        enable_auto_commit=False,
        # tansu answers a fetch only when the wait expires; on S3 storage it then answers empty if
        # reading its batches took longer (support/s3.py)
        fetch_max_wait_ms=getattr(broker, "fetch_max_wait_ms", 10),
        auto_offset_reset="earliest",
        **security_of(broker),
    )
    await consumer.start()
    records: list[Any] = []
    try:
        await consumer.topics()  # metadata, so the topic's partitions are known
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen: set[object] = set()
        deadline = time.monotonic() + timeout
        while (len(seen) if key else len(records)) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
                if key:
                    seen.update(key(record) for record in batch)
    finally:
        await consumer.stop()
    if key is None:
        assert len(records) >= count, f"{topic}: expected {count} records, got {len(records)}"
    return records


class Committed:
    """Reads a group's committed offset the way Kafka tools do: OffsetFetch, without joining the group."""

    def __init__(self, broker: EmbeddedBroker, topics: Topics) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            group_id=topics.group,
            enable_auto_commit=False,
            **security_of(broker),
        )
        self.tp = TopicPartition(topics.node, 0)

    async def __aenter__(self) -> Committed:
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()

    async def offset(self) -> int:
        return int(await self.consumer.committed(self.tp) or 0)

    async def settles_at(self, expected: int, timeout: float = 30) -> None:
        """Wait for the committed offset to reach `expected`, then assert it is exactly that."""
        deadline = time.monotonic() + timeout
        while await self.offset() < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await self.offset() == expected
