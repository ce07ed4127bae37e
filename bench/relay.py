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
from itertools import chain
from pathlib import Path

import peers
import report
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from report import Run
from resonance_local.embedded import EMBEDDED_CLIENT_ENV, EmbeddedBroker, free_port

BENCH = Path(__file__).resolve().parent
RELAYS = ("bridge", "baseline")
CONTROL_TOPICS = ("bench.heartbeats", "bench.deadletter")


class Bench:
    def __init__(
        self,
        broker: EmbeddedBroker,
        records: int,
        logs: Path,
        py_spy: str | None = None,
        bridge_env: dict[str, str] | None = None,
    ) -> None:
        self.broker, self.records, self.logs, self.py_spy = broker, records, logs, py_spy
        self.bridge_env = bridge_env or {}
        self.profilers: list[subprocess.Popen[bytes]] = []
        self.receiver, self.sender = peers.Receiver(), peers.Sender()
        self.admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)

    async def __aenter__(self) -> Bench:
        await self.receiver.start()
        await self.sender.start()
        await self.admin.start()
        await self.admin.create_topics([NewTopic(t, 1, 1) for t in CONTROL_TOPICS])
        return self

    async def __aexit__(self, *_: object) -> None:
        for profiler in self.profilers:
            await asyncio.to_thread(profiler.wait)
        await self.admin.close()
        await self.receiver.close()
        await self.sender.close()

    def spawn(
        self,
        relay: str,
        direction: str,
        node_topic: str,
        inbound_topic: str,
        group: str,
        endpoint: str,
        log: Path,
    ) -> subprocess.Popen[bytes]:
        bootstrap = self.broker.bootstrap
        if relay == "bridge":
            command = [sys.executable, "-m", "resonance_bridge"]
            env = {
                "RESONANCE_NODE": "bench",
                "RESONANCE_ENDPOINT": endpoint,
                "RESONANCE_TOPIC": node_topic,
                "RESONANCE_ANCHOR": peers.ANCHOR,
                "RESONANCE_INBOUND_TOPIC": inbound_topic,
                "RESONANCE_HEARTBEAT_TOPIC": CONTROL_TOPICS[0],
                "RESONANCE_DEADLETTER_TOPIC": CONTROL_TOPICS[1],
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA_GROUP_ID": group,
                "RESONANCE_HTTP_PORT": str(free_port()),
                **EMBEDDED_CLIENT_ENV,  # what the embedded broker needs; all else the defaults
                **self.bridge_env,
            }
        else:
            topic = node_topic if direction == "outbound" else inbound_topic
            flags = {"--bootstrap": bootstrap, "--topic": topic, "--group": group, "--endpoint": endpoint}
            mode = "out" if direction == "outbound" else "in"
            command = [sys.executable, str(BENCH / "baseline_relay.py"), mode, *chain(*flags.items())]
            env = {}
        with open(log, "ab") as out:
            process = subprocess.Popen(
                command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
            )
        if self.py_spy:  # sample the relay for the whole run; py-spy exits with it
            self.profilers.append(
                subprocess.Popen(
                    [
                        self.py_spy,
                        "record",
                        "--pid",
                        str(process.pid),
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--rate",
                        "250",
                        "-o",
                        str(log.with_suffix(".stacks")),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        return process

    async def run(self, round_no: int, direction: str, relay: str) -> Run:
        suffix = f"{round_no}.{relay}.{direction}.{uuid.uuid4().hex[:6]}"
        node_topic, inbound_topic = f"bench.node.{suffix}", f"bench.inbound.{suffix}"
        group = f"bench-{suffix}"
        await self.admin.create_topics([NewTopic(t, 1, 1) for t in (node_topic, inbound_topic)])
        if direction == "outbound":
            await peers.prefill(self.broker.bootstrap, node_topic, self.records)
        peer: peers.Receiver | peers.Sender = self.receiver if direction == "outbound" else self.sender
        log = self.logs / f"{suffix}.log"
        spawned = time.monotonic()
        process = self.spawn(relay, direction, node_topic, inbound_topic, group, peer.endpoint, log)
        try:
            probe = peers.prober(process.pid, self.broker.process.pid if self.broker.process else 0)
            peer.arm(self.records, probe)
            waits = []
            if direction == "inbound":
                waits.append(asyncio.create_task(self._stored(inbound_topic, probe)))
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
        trouble = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if any(word in line for word in ("WARNING", "ERROR", "Traceback"))
        ]
        if trouble:  # e.g. a reconnect: the run is then no clean measurement
            print(f"  {relay} logged {len(trouble)} warnings/errors, first: {trouble[0]} (log {log})")
        return Run(
            round_no,
            direction,
            relay,
            self.records,
            seconds=last.at - first.at,
            relay_cpu=last.relay_cpu - first.relay_cpu,
            rss_mb=rss,
            broker_cpu=last.broker_cpu - first.broker_cpu,
            peers_cpu=last.peers_cpu - first.peers_cpu,
            startup_s=first.at - spawned,
        )

    async def _stored(self, topic: str, probe: peers.Probe) -> peers.Snapshot:
        await self.sender.sent.wait()
        return await peers.kafka_watch(self.broker.bootstrap, topic, self.records, probe)

    @staticmethod
    async def _done(peer: peers.Receiver | peers.Sender) -> peers.Snapshot:
        await peer.done.wait()
        end = peer.last if isinstance(peer, peers.Receiver) else peer.acked
        assert end is not None
        return end

    async def _watch(
        self, process: subprocess.Popen[bytes], waits: list[asyncio.Task[peers.Snapshot]], log: Path
    ) -> list[peers.Snapshot]:
        """Wait for the run's end conditions, failing fast if the relay dies or stalls."""
        deadline = time.monotonic() + 60 + self.records / 1000
        try:
            while not all(task.done() for task in waits):
                await asyncio.wait(waits, timeout=1)
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


async def bench(broker: EmbeddedBroker, args: argparse.Namespace, logs: Path) -> list[Run]:
    records, rounds = args.records, args.rounds
    runs: list[Run] = []
    bridge_env = dict(setting.split("=", 1) for setting in args.bridge_env)
    async with Bench(broker, records, logs, args.py_spy, bridge_env) as b:
        for round_no in range(1, rounds + 1):
            order = RELAYS if round_no % 2 else RELAYS[::-1]  # who goes first alternates, too
            for direction in args.directions:
                for relay in order:
                    run = await b.run(round_no, direction, relay)
                    runs.append(run)
                    print(
                        f"round {round_no} {direction:8} {relay:8} {run.rate:9,.0f} msg/s  "
                        f"cpu {run.relay_cpu:6.2f} s  rss {run.rss_mb:6.1f} MB  "
                        f"(broker cpu {run.broker_cpu:.2f} s, peers cpu {run.peers_cpu:.2f} s)",
                        flush=True,
                    )
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md", help="markdown file to write")
    parser.add_argument(
        "--direction",
        dest="directions",
        action="append",
        choices=("outbound", "inbound"),
        help="only this direction (repeatable; default both)",
    )
    parser.add_argument(
        "--bridge-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the bridge, e.g. KAFKA_LINGER_MS=20 (repeatable)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="profile each relay with this py-spy binary: "
        "collapsed stacks land next to the logs (and the CPU numbers include its overhead)",
    )
    args = parser.parse_args()
    args.directions = args.directions or ["outbound", "inbound"]
    logs = Path(tempfile.mkdtemp(prefix="resonance-bench-"))
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"logs in {logs}; load average {' '.join(load)}", flush=True)
    broker = EmbeddedBroker(log_path=logs / "tansu.log")
    broker.start()
    try:
        started = time.monotonic()
        runs = asyncio.run(bench(broker, args, logs))
        took = time.monotonic() - started
    finally:
        broker.stop()
    command = " ".join(["python", "bench/relay.py", *sys.argv[1:]])
    text = report.render(runs, args.records, args.rounds, command, took, args.results, load)
    args.results.write_text(text)
    print(f"\n{report.tables(runs)}\nwritten to {args.results} in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
