"""Relay benchmark: the bridge against a minimal no-guarantee relay and mq-bridge, with its own ceilings.

Every process is separate: the broker (tansu, in memory), the relay, and the harness's peers, each
doing the least per message (bench/wire.py, bench/kafka_side.py). Per round, alternating the order,
on a fresh topic and group per run, with the same Kafka client settings for every contender:
  outbound: a topic pre-filled with --records ~1 KB records -> relay -> a node that acks every message;
            from the first record at the node to the last
  inbound:  a node sending --records frames as fast as the relay reads them -> relay -> a topic; from
            the connection until the topic holds them all (and, for the bridge, every ack came back)
  ceilings: the same peers with no relay between (feeder -> receiver, sender -> drain) and Kafka
            alone (a consumer reading, a producer writing): what the harness can measure at most
Then: latency at --rate msg/s against Kafka alone, time to the first message after a restart with
committed offsets, and the bridge idle. Results: bench/RESULTS.md (a "## Notes" section is kept)
and bench/results.png (with matplotlib, the `bench` extra).

    make bench                                   # 100,000 records, 3 rounds (~10 minutes)
    make bench BENCH_ARGS=--quick                # a one-minute smoke run, to /tmp
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import clock
import report
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kafka_side import prefill
from procs import BENCH, Proc, script
from report import Latency, Run
from resonance_local.embedded import EMBEDDED_CLIENT_ENV, EmbeddedBroker, free_port

CONTROL = ("bench.heartbeats", "bench.deadletter")


class Bench:
    def __init__(self, broker: EmbeddedBroker, args: argparse.Namespace, logs: Path) -> None:
        self.broker, self.args, self.logs = broker, args, logs
        self.admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        self.broker_pid = broker.process.pid if broker.process else 0

    def relay(
        self, who: str, direction: str, topic: str, group: str, endpoint: str, env: dict[str, str]
    ) -> list[str]:
        """The command of a contender; `env` is filled with the bridge's environment."""
        if who == "bridge-before":  # the same bridge as of --baseline, from its source tree
            env["PYTHONPATH"] = str(self.args.baseline_tree / "bridge")
        if who.startswith("bridge"):
            env.update(
                RESONANCE_NODE="bench",
                RESONANCE_ENDPOINT=endpoint,
                RESONANCE_ANCHOR=clock.ANCHOR,
                RESONANCE_TOPIC=topic if direction == "outbound" else f"{topic}.unused",
                RESONANCE_INBOUND_TOPIC=topic if direction == "inbound" else f"{topic}.unused",
                RESONANCE_HEARTBEAT_TOPIC=CONTROL[0],
                RESONANCE_DEADLETTER_TOPIC=CONTROL[1],
                KAFKA_BOOTSTRAP_SERVERS=self.broker.bootstrap,
                KAFKA_GROUP_ID=group,
                RESONANCE_HTTP_PORT=str(free_port()),
                RESONANCE_ACK_MODE="send" if who == "bridge-send" else "ack",
                # bridge-direct: as the operator runs a node with one replica
                KAFKA_ASSIGNMENT="direct" if who == "bridge-direct" else "group",
            )
            return [sys.executable, "-m", "resonance_bridge"]
        flags = [*self.kafka(topic, "--group", group), "--endpoint", endpoint]
        mode = "out" if direction == "outbound" else "in"
        if who == "mq-bridge":
            return [self.args.mq_python, str(BENCH / "mq_bridge_relay.py"), mode, *flags]
        return script("baseline_relay.py", mode, *flags)

    def kafka(self, topic: str, *more: str) -> list[str]:
        """The flags of a Kafka-side process (or a relay) for one topic."""
        return ["--bootstrap", self.broker.bootstrap, "--topic", topic, *more]

    @contextlib.asynccontextmanager
    async def scoped(self, topic: str) -> AsyncIterator[list[Proc]]:
        """A fresh topic, and a list for the run's processes: however the run ends, they are stopped
        and the topic deleted."""
        await self.topics(topic)
        procs: list[Proc] = []
        try:
            yield procs
        finally:
            for proc in reversed(procs):
                await proc.stop()
            await self.admin.delete_topics([topic])

    async def topics(self, *names: str) -> None:
        await self.admin.create_topics([NewTopic(name, 1, 1) for name in names])

    def proc(self, name: str, tag: str) -> Proc:
        return Proc(name, self.logs / f"{tag}.{name}.log")

    def watching(self, tag: str, *procs: Proc) -> str:
        path = self.logs / f"{tag}.watch"
        path.write_text(" ".join(str(p.pid) for p in procs) + f" {self.broker_pid}")
        return f"@{path}"

    # --- throughput -----------------------------------------------------------------------------

    async def run(self, round_no: int, direction: str, who: str) -> Run:
        n, tag = self.args.records, f"{round_no}.{direction}.{who}.{uuid.uuid4().hex[:6]}"
        topic, group, watch = f"bench.{tag}", f"bench-{tag}", self.logs / f"{tag}.watch"
        limit = 60 + n / 2000
        async with self.scoped(topic) as procs:
            if who == "bridge-listen":  # the node dials in: the same peers, as clients
                if direction == "outbound":
                    await prefill(self.broker.bootstrap, topic, n)
                else:
                    counting = self.kafka(topic, "--expect", str(n), "--watch", f"@{watch}")
                    counter = await self.peer(procs, "kafka_side.py", tag, "counter", *counting)
                    await counter.wait("ready", 30)
                relayed, url = await self.spawn_listening(procs, tag, direction, topic, group)
                role = "drain" if direction == "outbound" else "feeder"
                node = await self.peer(
                    procs, "wire.py", tag, role, "--endpoint", url, "--count", str(n), "--watch", f"@{watch}"
                )
                firsts = [await node.wait("first", limit)]
                ends = [await node.wait("done", limit)]
                ends += [await counter.wait("done", limit)] if direction == "inbound" else []
            elif direction == "outbound":
                await prefill(self.broker.bootstrap, topic, n)
                ender = starter = await self.peer(
                    procs, "wire.py", tag, "receiver", "--expect", str(n), "--watch", f"@{watch}"
                )
                relayed = await self.spawn_relay(procs, tag, who, direction, topic, group, ender)
                firsts, ends = [await starter.wait("first", limit)], [await ender.wait("done", limit)]
            else:
                counting = self.kafka(topic, "--expect", str(n), "--watch", f"@{watch}")
                counter = await self.peer(procs, "kafka_side.py", tag, "counter", *counting)
                await counter.wait("ready", 30)
                acks = [] if who.startswith("bridge") else ["--no-acks"]
                starter = await self.peer(
                    procs, "wire.py", tag, "sender", "--count", str(n), *acks, "--watch", f"@{watch}"
                )
                relayed = await self.spawn_relay(procs, tag, who, direction, topic, group, starter)
                firsts = [await starter.wait("first", limit)]
                ends = [await starter.wait("done", limit), await counter.wait("done", limit)]
            rss = clock.memory_mb(relayed.pid)
        return self.measured(
            round_no, direction, who, procs, relayed, firsts[0], max(ends, key=lambda e: e["t"]), rss
        )

    async def ceiling(self, round_no: int, direction: str, who: str) -> Run:
        """The harness alone: its peers fed directly, or Kafka alone, as fast as they go."""
        n, tag = self.args.records, f"{round_no}.{direction}.{who}.{uuid.uuid4().hex[:6]}"
        topic, watch, limit = f"bench.{tag}", self.logs / f"{tag}.watch", 60 + n / 2000
        kafka = self.kafka(topic, "--watch", f"@{watch}")
        async with self.scoped(topic) as procs:
            if who == "kafka alone" and direction == "outbound":
                await prefill(self.broker.bootstrap, topic, n)
                ender = await self.peer(
                    procs, "kafka_side.py", tag, "reader", *kafka, "--expect", str(n), "--group", f"g-{tag}"
                )
            elif who == "kafka alone":
                ender = await self.peer(procs, "kafka_side.py", tag, "writer", *kafka, "--count", str(n))
            else:
                server = "receiver" if direction == "outbound" else "sender"
                count = ["--expect" if server == "receiver" else "--count", str(n)]
                listening = await self.peer(procs, "wire.py", tag, server, *count, "--watch", f"@{watch}")
                url = f"ws://127.0.0.1:{(await listening.wait('port', 30))['port']}"
                client = "feeder" if direction == "outbound" else "drain"
                await self.peer(procs, "wire.py", tag, client, "--endpoint", url, "--count", str(n))
                ender = listening
            first, done = await ender.wait("first", limit), await ender.wait("done", limit)
        return self.measured(round_no, direction, who, procs, procs[-1], first, done, 0.0)

    async def peer(self, procs: list[Proc], module: str, tag: str, *args: str) -> Proc:
        proc = await self.proc(args[0], tag).start(script(module, *args))
        procs.append(proc)
        self.watching(tag, *procs)  # before its first event, which snapshots them all
        return proc

    async def spawn_relay(
        self, procs: list[Proc], tag: str, who: str, direction: str, topic: str, group: str, node: Proc
    ) -> Proc:
        env = {**EMBEDDED_CLIENT_ENV, **self.args.bridge_env}
        port = (await node.wait("port", 30))["port"]
        command = self.relay(who, direction, topic, group, f"ws://127.0.0.1:{port}", env)
        relayed = await self.proc("relay", tag).start(command, env)
        procs.append(relayed)
        self.watching(tag, *procs)
        await self.profile(relayed, tag)
        for proc in procs:
            proc.needs.append(relayed)
        return relayed

    async def profile(self, relayed: Proc, tag: str) -> None:
        """With --py-spy: the relay sampled for its whole life; the stacks land next to its log."""
        if self.args.py_spy:
            out = str(relayed.log.with_suffix(".stacks"))
            spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(relayed.pid)]
            spy += ["--nonblocking", "--rate", "1000", "--format", "raw", "-o", out]
            await self.proc("py-spy", tag).start(spy)

    async def spawn_listening(
        self, procs: list[Proc], tag: str, direction: str, topic: str, group: str
    ) -> tuple[Proc, str]:
        """A bridge that listens (RESONANCE_LISTEN) for its node, and the URL the node dials."""
        env = {**EMBEDDED_CLIENT_ENV, **self.args.bridge_env}
        port = free_port()
        command = self.relay("bridge-ack", direction, topic, group, "", env)
        del env["RESONANCE_ENDPOINT"]
        env.update(RESONANCE_LISTEN=f"127.0.0.1:{port}", RESONANCE_LISTEN_ANONYMOUS="true")
        relayed = await self.proc("relay", tag).start(command, env)
        procs.append(relayed)
        self.watching(tag, *procs)
        return relayed, f"ws://127.0.0.1:{port}/"

    def measured(
        self,
        round_no: int,
        direction: str,
        who: str,
        procs: list[Proc],
        relayed: Proc,
        first: dict[str, Any],
        end: dict[str, Any],
        rss: float,
    ) -> Run:
        def cpu(pid: int) -> float:
            return float(end["cpu"].get(str(pid), 0.0) - first["cpu"].get(str(pid), 0.0))

        peers = sum(cpu(p.pid) for p in procs if p is not relayed)
        return Run(
            round_no,
            direction,
            who,
            self.args.records,
            seconds=end["t"] - first["t"],
            relay_cpu=cpu(relayed.pid),
            rss_mb=rss,
            broker_cpu=cpu(self.broker_pid),
            peers_cpu=peers,
            startup_s=first["t"] - relayed.spawned,
        )

    # --- latency, start, idle --------------------------------------------------------------------

    async def latency(self, who: str) -> Latency:
        """Stamped records at --rate a second for --latency-seconds, produced once the relay delivered
        a first record: the delay from the producer's send to the node (or to a consumer alone)."""
        tag = f"latency.{who}.{uuid.uuid4().hex[:6]}"
        topic, group, n = f"bench.{tag}", f"bench-{tag}", int(self.args.rate * self.args.latency_seconds)
        async with self.scoped(topic) as procs:
            if who == "kafka alone":
                reading = self.kafka(topic, "--group", group, "--expect", str(n + 1), "--latency")
                ender = await self.peer(procs, "kafka_side.py", tag, "reader", *reading)
                await ender.wait("ready", 30)
            else:
                ender = await self.peer(
                    procs, "wire.py", tag, "receiver", "--expect", str(n + 1), "--latency"
                )
                await self.spawn_relay(procs, tag, who, "outbound", topic, group, ender)
            await prefill(self.broker.bootstrap, topic, 1)  # the warm-up record: the relay is up
            await ender.wait("first", 60)
            paced = self.kafka(topic, "--rate", str(self.args.rate))
            await self.peer(
                procs, "kafka_side.py", tag, "paced", *paced, "--seconds", str(self.args.latency_seconds)
            )
            done = await ender.wait("done", self.args.latency_seconds + 60)
        return Latency(who, self.args.rate, done["samples"], done["p50_ms"], done["p99_ms"], done["max_ms"])

    async def first_message(self, who: str) -> float:
        """Seconds from starting the relay to the first record at the node, its group having committed
        offsets: relay 100 records, stop it, add one, start it again."""
        tag = f"start.{who}.{uuid.uuid4().hex[:6]}"
        topic, group = f"bench.{tag}", f"bench-{tag}"
        async with self.scoped(topic) as procs:
            await prefill(self.broker.bootstrap, topic, 100)
            node = await self.peer(procs, "wire.py", tag, "receiver", "--expect", "100")
            relayed = await self.spawn_relay(procs, tag, who, "outbound", topic, group, node)
            await node.wait("done", 60)
            await asyncio.sleep(2)  # past the bridge's 1 s commit interval
            await relayed.stop()
            await prefill(self.broker.bootstrap, topic, 1, first=100)
            node = await self.peer(procs, "wire.py", tag + ".again", "receiver", "--expect", "1")
            relayed = await self.spawn_relay(procs, tag + ".again", who, "outbound", topic, group, node)
            return float((await node.wait("first", 60))["t"] - relayed.spawned)

    async def idle(self) -> dict[str, float]:
        """The bridge as the operator runs a node of one replica (its defaults, KAFKA_ASSIGNMENT=direct;
        idempotence off: tansu lacks it) and its node connected, once its one record was delivered:
        CPU and memory with nothing to do."""
        tag = f"idle.{uuid.uuid4().hex[:6]}"
        topic = f"bench.{tag}"
        async with self.scoped(topic) as procs:
            await prefill(self.broker.bootstrap, topic, 1)
            node = await self.peer(procs, "wire.py", tag, "receiver", "--expect", "1")
            port = (await node.wait("port", 30))["port"]
            env = {"KAFKA_ENABLE_IDEMPOTENCE": "false", **self.args.bridge_env}
            command = self.relay(
                "bridge-direct", "outbound", topic, f"g-{tag}", f"ws://127.0.0.1:{port}", env
            )
            relayed = await self.proc("relay", tag).start(command, env)
            procs.append(relayed)
            await self.profile(relayed, tag)
            await node.wait("first", 60)
            await asyncio.sleep(3)
            cpu, broker, at = (
                clock.cpu_seconds(relayed.pid),
                clock.cpu_seconds(self.broker_pid),
                time.monotonic(),
            )
            await asyncio.sleep(self.args.idle_seconds)
            took = time.monotonic() - at
            return {
                "cpu_percent": (clock.cpu_seconds(relayed.pid) - cpu) / took * 100,
                "broker_cpu_percent": (clock.cpu_seconds(self.broker_pid) - broker) / took * 100,
                "rss_mb": clock.memory_mb(relayed.pid, "VmRSS"),
                # Less the pages of shared libraries every bridge on a machine maps from the same files.
                "private_mb": clock.memory_mb(relayed.pid, "RssAnon"),
                "seconds": took,
            }


def baseline(rev: str, tree: Path) -> Path:
    """The bridge's source as of `rev`, exported from git into `tree`."""
    tree.mkdir()
    git = ["git", "archive", rev, "bridge"]
    archive = subprocess.run(git, cwd=BENCH.parent, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


async def bench(broker: EmbeddedBroker, args: argparse.Namespace, logs: Path) -> report.Results:
    results = report.Results()
    b = Bench(broker, args, logs)
    await b.admin.start()
    try:
        await b.topics(*CONTROL)
        contenders = ["bridge-ack", "bridge-send", "bridge-listen", "minimal"]
        contenders += ["bridge-before"] if args.baseline else []
        contenders += ["mq-bridge"] if args.mq_python else []
        contenders = [c for c in contenders if c in (args.contenders or contenders)]
        for round_no in range(1, 0 if args.idle_only or args.latency_only else args.rounds + 1):
            order = contenders if round_no % 2 else contenders[::-1]
            for direction in args.directions:
                for who in ["harness", "kafka alone"]:
                    results.add(await b.ceiling(round_no, direction, who))
                for who in order:
                    if direction == "inbound" and who in ("bridge-send", "mq-bridge"):
                        continue  # send mode is outbound only; mq-bridge cannot connect out for inbound
                    results.add(await b.run(round_no, direction, who))
        if args.throughput_only:
            return results
        if args.idle_only:
            results.idle = await b.idle()
            print(f"idle bridge: {results.idle}", flush=True)
            return results
        single = ("bridge-send", "bridge-listen", "bridge-before")  # measured by throughput alone
        timed = [c for c in contenders if c not in single or (args.latency_only and c == "bridge-before")]
        for who in ["kafka alone", *timed]:
            results.latencies.append(await b.latency(who))
            print(results.latencies[-1].line(), flush=True)
        if args.latency_only:
            return results
        for who in ["bridge-direct", *[c for c in contenders if c not in single]]:
            results.first[who] = await b.first_message(who)
            print(f"first message after a restart, {who}: {results.first[who]:.2f} s", flush=True)
        results.idle = await b.idle()
        print(f"idle bridge: {results.idle}", flush=True)
    finally:
        await b.admin.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run, results to /tmp")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000, help="latency runs: msg/s")
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument(
        "--contender",
        dest="contenders",
        action="append",
        choices=("bridge-ack", "bridge-send", "bridge-listen", "bridge-before", "minimal", "mq-bridge"),
        help="only these",
    )
    parser.add_argument(
        "--py-spy", action="store_true", help="profile each relay (py-spy raw stacks in the logs)"
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the bridge as of this git revision (ack mode `ack`): a before/after in one run",
    )
    parser.add_argument(
        "--throughput-only", action="store_true", help="skip the latency, restart and idle measures"
    )
    parser.add_argument("--idle-only", action="store_true", help="only the idle bridge (with --bridge-env)")
    parser.add_argument("--latency-only", action="store_true", help="only the latency runs")
    parser.add_argument("--direction", dest="directions", action="append", choices=("outbound", "inbound"))
    parser.add_argument(
        "--bridge-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the bridge, e.g. KAFKA_LINGER_MS=20 (repeatable)",
    )
    default_mq = sys.executable if importlib.util.find_spec("mq_bridge") else None
    parser.add_argument(
        "--mq-python",
        default=default_mq,
        help="a python with mq-bridge installed (default: this one, if it has it)",
    )
    args = parser.parse_args()
    args.bridge_env = dict(e.split("=", 1) for e in args.bridge_env)
    args.directions = args.directions or ["outbound", "inbound"]
    if args.quick:
        args.records, args.rounds, args.latency_seconds, args.idle_seconds = 20_000, 1, 3, 5
        if args.results == BENCH / "RESULTS.md":
            args.results = Path(tempfile.gettempdir()) / "resonance-bench-quick.md"
    logs = Path(tempfile.mkdtemp(prefix="resonance-bench-"))
    if args.baseline:
        args.baseline_tree = baseline(args.baseline, logs / "baseline")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"logs in {logs}; load average {' '.join(load)}", flush=True)
    broker = EmbeddedBroker(log_path=logs / "tansu.log")
    broker.start()
    try:
        started = time.monotonic()
        results = asyncio.run(bench(broker, args, logs))
        took = time.monotonic() - started
    finally:
        broker.stop()
    command = " ".join(["python", "bench/relay.py", *sys.argv[1:]])
    args.results.write_text(report.render(results, args, command, took, load))
    report.plot(results, args.results.with_name(args.results.stem.replace("RESULTS", "results") + ".png"))
    print(f"\n{report.summary(results)}\nwritten to {args.results} in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
