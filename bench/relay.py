"""Relay benchmark: the bridge against a minimal no-guarantee relay (bench/baseline_relay.py).

Both relays run as child processes against one embedded broker (tansu, in memory) and the same
WebSocket peers (bench/peers.py), alternating, for --rounds rounds, in both directions:
  outbound: a fresh topic pre-filled with --records ~1 KB state_update records -> the relay ->
            a receiver that acks every message; timed from the first record received to the last
  inbound:  a sender that writes --records frames as fast as the relay reads them -> the relay ->
            a fresh topic; timed from the connection until the topic holds every record (and, for
            the bridge, until the sender also got every ack: the bridge acks only what Kafka stored)
CPU seconds (utime+stime from /proc/<pid>/stat) are over the same window; peak RSS is VmHWM.
Results go to bench/RESULTS.md (a "## Notes" section already there is kept).

    .venv/bin/python bench/relay.py                              # 200,000 records, 3 rounds
    .venv/bin/python bench/relay.py --records 5000 --rounds 1 --results /tmp/smoke.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import peers
import report
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from report import Run

# resonance_bridge has no py.typed: `mypy bench` sees it as untyped, `mypy` (all files) does not
from resonance_bridge.embedded import EmbeddedBroker, free_port  # type: ignore[import-untyped, unused-ignore]

BENCH = Path(__file__).resolve().parent
RELAYS = ("bridge", "baseline")
CONTROL_TOPICS = ("bench.heartbeats", "bench.deadletter")


class Bench:
    def __init__(self, broker: EmbeddedBroker, records: int, logs: Path) -> None:
        self.broker, self.records, self.logs = broker, records, logs
        self.receiver, self.sender = peers.Receiver(), peers.Sender()
        self.admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)

    async def __aenter__(self) -> Bench:
        await self.receiver.start()
        await self.sender.start()
        await self.admin.start()
        await self.admin.create_topics([NewTopic(t, 1, 1) for t in CONTROL_TOPICS])
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.admin.close()
        await self.receiver.close()
        await self.sender.close()

    async def prefill(self, topic: str) -> None:
        """Write the records in big hand-built batches: the bench's own writes should not take long."""
        size = 512 * 1024
        producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all",
                                    enable_idempotence=False, max_batch_size=size, max_request_size=2 * size)
        await producer.start()
        try:
            key, seq, pending = peers.ANCHOR.encode(), 0, []
            while seq < self.records:
                batch = producer.create_batch()
                while seq < self.records and batch.append(key=key, value=peers.record(seq), timestamp=None):
                    seq += 1
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=0))
                if len(pending) >= 4:
                    await pending.pop(0)
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    def spawn(self, relay: str, direction: str, node_topic: str, inbound_topic: str, group: str,
              endpoint: str, log: Path) -> subprocess.Popen[bytes]:
        bootstrap = self.broker.bootstrap
        if relay == "bridge":
            command = [sys.executable, "-m", "resonance_bridge", "bridge"]
            env = {"RESONANCE_NODE": "bench", "RESONANCE_ENDPOINT": endpoint, "RESONANCE_TOPIC": node_topic,
                   "RESONANCE_ANCHOR": peers.ANCHOR, "RESONANCE_INBOUND_TOPIC": inbound_topic,
                   "RESONANCE_HEARTBEAT_TOPIC": CONTROL_TOPICS[0],
                   "RESONANCE_DEADLETTER_TOPIC": CONTROL_TOPICS[1], "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                   "KAFKA_GROUP_ID": group, "RESONANCE_HTTP_PORT": str(free_port()),
                   # what the embedded broker needs (see tests/harness.py); all else the defaults
                   "KAFKA_ENABLE_IDEMPOTENCE": "false", "KAFKA_FETCH_MAX_WAIT_MS": "10",
                   "KAFKA_SESSION_TIMEOUT_MS": "1000", "KAFKA_HEARTBEAT_INTERVAL_MS": "200"}
        else:
            topic = node_topic if direction == "outbound" else inbound_topic
            command = [sys.executable, str(BENCH / "baseline_relay.py"),
                       "out" if direction == "outbound" else "in",
                       "--bootstrap", bootstrap, "--topic", topic, "--group", group, "--endpoint", endpoint]
            env = {}
        with open(log, "ab") as out:
            return subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)

    async def run(self, round_no: int, direction: str, relay: str) -> Run:
        suffix = f"{round_no}.{relay}.{direction}.{uuid.uuid4().hex[:6]}"
        node_topic, inbound_topic = f"bench.node.{suffix}", f"bench.inbound.{suffix}"
        group = f"bench-{suffix}"
        await self.admin.create_topics([NewTopic(t, 1, 1) for t in (node_topic, inbound_topic)])
        if direction == "outbound":
            await self.prefill(node_topic)
        peer: peers.Receiver | peers.Sender = self.receiver if direction == "outbound" else self.sender
        log = self.logs / f"{suffix}.log"
        spawned = time.monotonic()
        process = self.spawn(relay, direction, node_topic, inbound_topic, group, peer.endpoint, log)
        try:
            probe = peers.prober(process.pid, self.broker.process.pid if self.broker.process else 0)
            peer.arm(self.records, probe)
            waits = []
            if direction == "inbound":
                waits.append(asyncio.create_task(
                    peers.kafka_watch(self.broker.bootstrap, inbound_topic, self.records, probe)))
            if direction == "outbound" or relay == "bridge":
                waits.append(asyncio.create_task(self._done(peer)))
            ends = await self._watch(process, waits, log)
            first = peer.first
            assert first is not None
            last = max(ends, key=lambda snapshot: snapshot.at)
            rss = peers.peak_rss_mb(process.pid)
        finally:
            await _stop(process)
            await self.admin.delete_topics([node_topic, inbound_topic])
        return Run(round_no, direction, relay, self.records, seconds=last.at - first.at,
                   relay_cpu=last.relay_cpu - first.relay_cpu, rss_mb=rss,
                   broker_cpu=last.broker_cpu - first.broker_cpu, peers_cpu=last.peers_cpu - first.peers_cpu,
                   startup_s=first.at - spawned)

    @staticmethod
    async def _done(peer: peers.Receiver | peers.Sender) -> peers.Snapshot:
        await peer.done.wait()
        end = peer.last if isinstance(peer, peers.Receiver) else peer.acked
        assert end is not None
        return end

    async def _watch(self, process: subprocess.Popen[bytes], waits: list[asyncio.Task[peers.Snapshot]],
                     log: Path) -> list[peers.Snapshot]:
        """Wait for the run's end conditions, failing fast if the relay dies or stalls."""
        deadline = time.monotonic() + 60 + self.records / 1000
        try:
            while not all(task.done() for task in waits):
                await asyncio.wait(waits, timeout=0.5)
                if process.poll() is not None:
                    raise RuntimeError(f"relay exited with {process.returncode}; log {log}:\n{_tail(log)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"relay stalled ({self._progress()}); log {log}:\n{_tail(log)}")
            return [task.result() for task in waits]
        finally:
            for task in waits:
                task.cancel()

    def _progress(self) -> str:
        return f"receiver {self.receiver.count}, sender acks {self.sender.acks}"


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(process.wait, 15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def bench(broker: EmbeddedBroker, records: int, rounds: int, logs: Path) -> list[Run]:
    runs: list[Run] = []
    async with Bench(broker, records, logs) as b:
        for round_no in range(1, rounds + 1):
            order = RELAYS if round_no % 2 else RELAYS[::-1]  # who goes first alternates, too
            for direction in ("outbound", "inbound"):
                for relay in order:
                    run = await b.run(round_no, direction, relay)
                    runs.append(run)
                    print(f"round {round_no} {direction:8} {relay:8} {run.rate:9,.0f} msg/s  "
                          f"cpu {run.relay_cpu:6.2f} s  rss {run.rss_mb:6.1f} MB  "
                          f"(broker cpu {run.broker_cpu:.2f} s, peers cpu {run.peers_cpu:.2f} s)", flush=True)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md", help="markdown file to write")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="resonance-bench-"))
    print(f"logs in {logs}", flush=True)
    broker = EmbeddedBroker(log_path=logs / "tansu.log")
    broker.start()
    try:
        started = time.monotonic()
        runs = asyncio.run(bench(broker, args.records, args.rounds, logs))
        took = time.monotonic() - started
    finally:
        broker.stop()
    command = " ".join(["python", "bench/relay.py", *sys.argv[1:]])
    text = report.render(runs, args.records, args.rounds, command, took, args.results)
    args.results.write_text(text)
    print(f"\n{report.tables(runs)}\nwritten to {args.results} in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
