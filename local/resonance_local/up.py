"""`resonance up`: the whole pipeline on one machine, no cluster: broker, nodes, one bridge per node.

Children start in order (broker, nodes, bridges, demo publisher) and stop in reverse; each runs in a
session of its own, so Ctrl-C reaches only `up`, which then stops them in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from resonance_operator.settings import Settings

from . import tools
from .embedded import BrokerUnavailable, EmbeddedBroker
from .manifests import LocalNode, load_nodes, local_env
from .view import render, scrape, summary


@dataclass
class Options:
    paths: list[Path]
    run_for: float | None = None
    json: bool = False
    nodes: bool = True
    demo: bool = True
    broker_port: int = 9092
    http_port_base: int = 18080


@dataclass
class Running:
    nodes: list[LocalNode]
    ports: dict[str, int] = field(default_factory=dict)  # bridge HTTP port per node
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=6))


def _detach() -> None:
    """In the child: a session of its own (the terminal's Ctrl-C is for `up`), and die with `up`."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _busy(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _port_problem(opts: Options, nodes: list[LocalNode], embedded: bool) -> str | None:
    wanted: list[tuple[int, str]] = []
    if embedded:
        wanted.append(
            (
                opts.broker_port,
                "the embedded broker: change it with --broker-port or use an existing "
                "Kafka via KAFKA_BOOTSTRAP_SERVERS",
            )
        )
    if opts.nodes:
        wanted += [
            (n.port, f"node {n.name}: change the port in {n.source} or pass --no-nodes") for n in nodes
        ]
    wanted += [
        (opts.http_port_base + i, f"the bridge of {n.name}: change it with --http-port-base")
        for i, n in enumerate(nodes)
    ]
    for port, what in wanted:
        if _busy(port):
            return f"resonance up: port {port} is in use ({what})"
    return None


def _spawn(
    running: Running, label: str, args: list[str], env: dict[str, str] | None, log: Path | None
) -> subprocess.Popen[bytes]:
    """A child process: `python -m` with args (its module first), e.g. the bridge as its pod runs it."""
    out = open(log, "ab") if log else subprocess.PIPE  # noqa: SIM115  (the child owns it)
    child = subprocess.Popen(
        [sys.executable, "-m", *args],
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_detach,
    )
    running.children.append((label, child))
    return child


async def _follow(child: subprocess.Popen[bytes], recent: deque[str]) -> None:
    """Keep a node's latest lines for the view's message ticker."""
    assert child.stdout is not None
    reader = child.stdout
    while line := await asyncio.to_thread(reader.readline):
        text = line.decode(errors="replace").rstrip()
        if "] <-" in text or "] ->" in text:
            recent.append(text[:160])


async def _publish(bootstrap: str, nodes: list[LocalNode], stop: asyncio.Event) -> None:
    """A gentle demo stream of the guide's messages, one every two seconds per node topic."""
    kinds = ["state", "sync", "repo"]
    i = 0
    while not stop.is_set():
        kind = kinds[i % len(kinds)]
        for node in nodes:
            body = tools.build(kind, f"demo #{i}", node.spec.anchor, node.spec.frequency_hz, node.spec.s_roi)
            with contextlib.suppress(Exception):  # a broker hiccup skips one demo message, nothing more
                await tools.send(bootstrap, [node.spec.topic], body, 1, node.spec.anchor)
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2)


def _stop_all(running: Running, force: bool) -> None:
    """Bridges first (they drain and commit), then nodes, then the broker; each group at once."""
    for kind in ("bridge", "node"):
        group = [
            child for label, child in running.children if label.startswith(kind) and child.poll() is None
        ]
        for child in group:
            child.send_signal(signal.SIGKILL if force else signal.SIGTERM)
        for child in group:
            try:
                child.wait(0.5 if force else 20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


async def up(opts: Options) -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    embedded = not bootstrap
    bootstrap = bootstrap or f"127.0.0.1:{opts.broker_port}"
    settings = Settings(kafka_bootstrap_servers=bootstrap, kafka_enable_idempotence=not embedded)
    nodes, errors = load_nodes(opts.paths, settings)
    for error in errors:
        print(f"resonance up: {error}", file=sys.stderr)
    if not nodes:
        print(f"resonance up: no valid ResonanceNode in {', '.join(map(str, opts.paths))}", file=sys.stderr)
        return 2
    problem = _port_problem(opts, nodes, embedded)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="resonance-up-"))
    running = Running(nodes)
    broker = EmbeddedBroker(opts.broker_port, logs / "broker.log") if embedded else None
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            _stop_all(running, force=True)  # a second Ctrl-C: no more waiting
            os._exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        if broker is not None:
            try:
                await asyncio.to_thread(broker.start)
            except BrokerUnavailable as exc:
                print(f"resonance up: {exc}", file=sys.stderr)
                return 2
        for i, node in enumerate(nodes):
            endpoint = None
            if opts.nodes:
                child = _spawn(
                    running,
                    f"node {node.name}",
                    [
                        "resonance_local",
                        "node",
                        "serve",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(node.port),
                        "--name",
                        node.name,
                        "--no-stdin",
                        "--send-every",
                        "5",
                    ],
                    None,
                    None,
                )
                tasks.append(asyncio.create_task(_follow(child, running.recent)))
                endpoint = f"ws://127.0.0.1:{node.port}"
            running.ports[node.name] = opts.http_port_base + i
            env = local_env(node, settings, running.ports[node.name], endpoint, embedded)
            _spawn(
                running, f"bridge {node.name}", ["resonance_bridge"], env, logs / f"bridge-{node.name}.log"
            )
        if opts.demo:
            tasks.append(asyncio.create_task(_publish(bootstrap, nodes, stop)))
        deadline = time.monotonic() + opts.run_for if opts.run_for else None
        if not opts.json:
            print(
                f"resonance up: broker {bootstrap}, {len(nodes)} node(s); logs in {logs}; Ctrl-C stops",
                flush=True,
            )
        await _watch(running, stop, deadline, live=not opts.json)
        states = await scrape(running.ports)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(_stop_all, running, False)
        if broker is not None:
            broker.stop()
    if opts.json:
        print(
            json.dumps([summary(n, states.get(n.name, {}), running.ports[n.name]) for n in nodes], indent=2)
        )
    return 0


async def _watch(running: Running, stop: asyncio.Event, deadline: float | None, live: bool) -> None:
    if not live:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                stop.wait(), None if deadline is None else max(0, deadline - time.monotonic())
            )
        return
    from rich.live import Live

    with Live(render(running.nodes, {}, running.ports, running.recent), refresh_per_second=2) as view:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            view.update(render(running.nodes, await scrape(running.ports), running.ports, running.recent))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1)


def config_lines(opts: Options) -> list[str]:
    """`resonance config`: the effective configuration, like the guide's `resonance_cli.py config`."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{opts.broker_port} (embedded broker)"
    settings = Settings(kafka_bootstrap_servers=bootstrap.split(" ")[0])
    nodes, errors = load_nodes(opts.paths, settings)
    lines = [
        f"broker: {bootstrap}",
        f"inbound topic: {nodes[0].spec.inbound_topic if nodes else 'resonance.inbound'}",
        f"heartbeat topic: {settings.heartbeat_topic}",
        f"dead-letter topic: {settings.deadletter_topic}",
        "nodes:",
    ]
    for i, node in enumerate(nodes):
        lines.append(
            f"  {node.name}: endpoint {node.spec.endpoint} (local ws://127.0.0.1:{node.port}), topic "
            f"{node.spec.topic}, anchor {node.spec.anchor}, {node.spec.frequency_hz} Hz, "
            f"bridge http :{opts.http_port_base + i}  [{node.source}]"
        )
    lines += [f"  error: {e}" for e in errors]
    return lines
