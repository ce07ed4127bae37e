"""The benchmark's fixed side, shared by both relays so that only the relay process differs.

- record, prefill: guide-format state_update messages padded to ~1 KB, and a topic filled with them.
- Receiver (outbound): a node that counts the records it gets and acks every message, like the
  reference node; the baseline relay just ignores the acks.
- Sender (inbound): a node that sends N frames as fast as the relay reads them and counts the acks.
- kafka_watch (inbound): waits until the topic holds N records without reading them (it fetches at
  offset N-1 and watches the high watermark). It starts only once the sender has sent everything:
  on this VM an idle aiokafka fetch loop costs a lot of CPU, which would be taken from the relay.
- cpu_seconds, peak_rss_mb, prober: per-process measurements from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

ANCHOR = "BOLZANO_71"
RECORD_BYTES = 1024
_TICK = os.sysconf("SC_CLK_TCK")
_TYPE = re.compile(r'"type"\s*:\s*"([^"]*)"')


def _template() -> str:
    """A guide-format state_update, padded so that a record is ~RECORD_BYTES; `%d` is the seq."""
    body = {
        "type": "state_update",
        "timestamp": "2026-01-13T02:00:00+00:00",
        "anchor": ANCHOR,
        "data": {"frequency": 0.043, "s_roi": 0.502, "status": "operational", "seq": 0, "message": ""},
    }
    size = len(json.dumps(body)) + 5  # a typical seq has 6 digits, not 1
    body["data"]["message"] = ("resonance " * 110)[: RECORD_BYTES - size]  # type: ignore[index]
    return json.dumps(body).replace('"seq": 0', '"seq": %d')


_TEMPLATE = _template()


def record(seq: int) -> bytes:
    return (_TEMPLATE % seq).encode()


async def prefill(bootstrap: str, topic: str, records: int) -> None:
    """Write `records` records to partition 0 in big hand-built batches: the bench's own writes
    should not take long."""
    size = 512 * 1024
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        max_batch_size=size,
        max_request_size=2 * size,
    )
    await producer.start()
    try:
        key, seq, pending = ANCHOR.encode(), 0, []
        while seq < records:
            batch = producer.create_batch()
            while seq < records and batch.append(key=key, value=record(seq), timestamp=None):
                seq += 1
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=0))
            if len(pending) >= 4:
                await pending.pop(0)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def message_type(frame: str | bytes) -> str:
    """The `type` of a frame, read from its head: cheap enough not to slow the peers down."""
    text = frame if isinstance(frame, str) else frame[:200].decode("utf-8", "replace")
    found = _TYPE.search(text, 0, 200)
    return found.group(1) if found else ""


# --- per-process measurements (Linux /proc) ---------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set size so far."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # time.monotonic()
    relay_cpu: float
    broker_cpu: float
    peers_cpu: float  # this process: the receiver or sender, and the Kafka watch


Probe = Callable[[], Snapshot]


def prober(relay_pid: int, broker_pid: int) -> Probe:
    def probe() -> Snapshot:
        return Snapshot(time.monotonic(), cpu_seconds(relay_pid), cpu_seconds(broker_pid), own_cpu_seconds())

    return probe


# --- the peers ----------------------------------------------------------------------------------


class _Peer:
    def __init__(self) -> None:
        self.server: Server | None = None
        self.port = 0
        self.expected = 0
        self.probe: Probe | None = None
        self.first: Snapshot | None = None
        self.done = asyncio.Event()

    async def start(self) -> None:
        self.server = await serve(self._handle, "127.0.0.1", 0, compression=None, max_size=None)
        self.port = int(next(iter(self.server.sockets)).getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    @property
    def endpoint(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def arm(self, expected: int, probe: Probe) -> None:
        self.expected, self.probe, self.first = expected, probe, None
        self.done = asyncio.Event()

    def snapshot(self) -> Snapshot:
        assert self.probe is not None, "arm() the peer before a run"
        return self.probe()

    async def _handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError


class Receiver(_Peer):
    """Outbound: counts state_update records; acks every message (records and the bridge's own)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.last: Snapshot | None = None
        self._acks: dict[str, str] = {}

    def arm(self, expected: int, probe: Probe) -> None:
        super().arm(expected, probe)
        self.count, self.last = 0, None

    def _ack(self, mtype: str) -> str:
        ack = self._acks.get(mtype)
        if ack is None:
            ack = self._acks[mtype] = json.dumps({"type": "ack", "original_type": mtype})
        return ack

    async def _handle(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                mtype = message_type(frame)
                if mtype == "state_update":
                    self.count += 1
                    if self.count == 1:
                        self.first = self.snapshot()
                    if self.count == self.expected:
                        self.last = self.snapshot()
                        self.done.set()
                if mtype not in ("ack", "error"):
                    await ws.send(self._ack(mtype))


class Sender(_Peer):
    """Inbound: on connect sends `expected` records as fast as the relay takes them; counts acks."""

    def __init__(self) -> None:
        super().__init__()
        self.acks = 0
        self.acked: Snapshot | None = None  # when the last ack arrived
        self.sent = asyncio.Event()  # every record was handed to the relay

    def arm(self, expected: int, probe: Probe) -> None:
        super().arm(expected, probe)
        self.acks, self.acked = 0, None
        self.sent = asyncio.Event()

    async def _handle(self, ws: ServerConnection) -> None:
        reader = asyncio.create_task(self._read_acks(ws))
        try:
            self.first = self.snapshot()
            for seq in range(self.expected):
                await ws.send(record(seq), text=True)
            self.sent.set()
            await reader
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()

    async def _read_acks(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:  # the bridge's acks, and its frequency_sync and heartbeats
                if isinstance(frame, str) and message_type(frame) == "ack" and '"state_update"' in frame:
                    self.acks += 1
                    if self.acks == self.expected:
                        self.acked = self.snapshot()
                        self.done.set()


async def kafka_watch(bootstrap: str, topic: str, expected: int, probe: Probe) -> Snapshot:
    """Wait until partition 0 of `topic` holds `expected` records; the snapshot taken then.

    Fetches at offset expected-1, which the broker answers with nothing (and the high watermark)
    until that record exists, so the watch reads at most one batch however many records arrive."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, expected - 1)
        while True:
            batch = await consumer.getmany(timeout_ms=50)
            high = consumer.highwater(tp)
            if batch.get(tp) or (high is not None and high >= expected):
                return probe()
    finally:
        await consumer.stop()
