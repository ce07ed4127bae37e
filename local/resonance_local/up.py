"""`resonance up`: the whole pipeline on one machine, no cluster: broker, nodes, one bridge per node.

Children start in order (broker, nodes, bridges, demo publisher) and stop in reverse; each runs in a
session of its own, so Ctrl-C reaches only `up`, which then stops them in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from resonance_bridge.config import ConfigError, EnvReader
from resonance_operator.settings import Settings

from . import tools
from .embedded import BrokerUnavailable, EmbeddedBroker
from .manifests import LocalNode, load_nodes, local_env, replay_file
from .processes import Running, detach, port_problem, spawn, stop_all
from .view import line_of, render, scrape, summary


@dataclass
class Options:
    paths: list[Path]
    run_for: float | None = None
    json: bool = False
    nodes: bool = True
    demo: bool = True
    broker_port: int = 9092
    http_port_base: int = 18080
    logs: Path | None = None  # kept after exit; None: a temporary folder, removed on exit


def _follow(child: subprocess.Popen[bytes], running: Running, log: Path) -> None:
    """A node's output, in a thread of its own until the node exits: all of it to its log, with the
    other logs; its messages to the view's ticker."""
    assert child.stdout is not None
    with open(log, "a") as out:
        for line in child.stdout:
            text = line.decode(errors="replace").rstrip()
            print(text, file=out, flush=True)
            shown = line_of(text)
            if shown is not None:
                running.recent.append(shown)


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


def _idempotence(embedded: bool) -> bool:
    """The user's KAFKA_ENABLE_IDEMPOTENCE if set (an existing tansu, `resonance broker`, needs false);
    else on for an existing Kafka, off for the embedded broker, which lacks it."""
    reader = EnvReader(os.environ)
    enabled = reader.boolean("KAFKA_ENABLE_IDEMPOTENCE", not embedded)
    if reader.problems:
        raise ConfigError(reader.problems)
    return enabled


async def up(opts: Options) -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    embedded = not bootstrap
    bootstrap = bootstrap or f"127.0.0.1:{opts.broker_port}"
    try:
        settings = Settings(
            kafka_bootstrap_servers=bootstrap, kafka_enable_idempotence=_idempotence(embedded)
        )
    except ConfigError as exc:
        print(f"resonance up: {exc.problems[0]}", file=sys.stderr)
        return 2
    nodes, errors = load_nodes(opts.paths, settings, local_ports=opts.nodes)
    for error in errors:
        print(f"resonance up: {error}", file=sys.stderr)
    if not nodes:
        print(f"resonance up: no valid ResonanceNode in {', '.join(map(str, opts.paths))}", file=sys.stderr)
        return 2
    problem = port_problem(nodes, opts.broker_port if embedded else None, opts.nodes, opts.http_port_base)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    logs = opts.logs or Path(tempfile.mkdtemp(prefix="resonance-up-"))
    logs.mkdir(parents=True, exist_ok=True)
    running = Running(nodes, logs)
    broker = EmbeddedBroker(opts.broker_port, logs / "broker.log") if embedded else None
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    seen: set[str] = set()  # nodes whose bridge was connected at some point

    def on_signal() -> None:
        if stop.is_set():
            stop_all(running, force=True)  # a second Ctrl-C: no more waiting
            if broker is not None:
                broker.stop()
            os._exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        if broker is not None:
            try:
                await asyncio.to_thread(broker.start, 15.0, detach)
            except BrokerUnavailable as exc:
                print(f"resonance up: {exc}", file=sys.stderr)
                return 2
        for i, node in enumerate(nodes):
            replay_file(node.name).unlink(missing_ok=True)  # a request of an earlier run is not this one's
            endpoint = None
            if opts.nodes and node.spec.listen is None:  # a listening node is dialled in by whoever wants
                args = ["resonance_local", "node", "serve", "--port", str(node.port), "--name", node.name]
                child = spawn(
                    running, f"node {node.name}", [*args, "--no-stdin", "--send-every", "5"], None, None
                )
                log = logs / f"node-{node.name}.log"
                tasks.append(asyncio.create_task(asyncio.to_thread(_follow, child, running, log)))
                endpoint = f"ws://127.0.0.1:{node.port}"
            running.ports[node.name] = opts.http_port_base + i
            env = local_env(node, settings, running.ports[node.name], endpoint, embedded)
            spawn(running, f"bridge {node.name}", ["resonance_bridge"], env, logs / f"bridge-{node.name}.log")
        if opts.demo:
            tasks.append(asyncio.create_task(_publish(bootstrap, nodes, stop)))
        deadline = time.monotonic() + opts.run_for if opts.run_for else None
        if not opts.json:
            kept = "" if opts.logs else " (removed on exit: --logs DIR keeps them)"
            print(
                f"resonance up: broker {bootstrap}, {len(nodes)} node(s); logs in {logs}{kept}; Ctrl-C stops"
            )
        await _watch(running, stop, deadline, seen, live=not opts.json)
        states = await scrape(running.ports)
        seen.update(name for name, m in states.items() if m.get("resonance_websocket_connected") == 1.0)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(stop_all, running, False)
        if broker is not None:
            broker.stop()
        if opts.logs is None:
            shutil.rmtree(logs, ignore_errors=True)
    if opts.json:
        print(
            json.dumps([summary(n, states.get(n.name, {}), running.ports[n.name]) for n in nodes], indent=2)
        )
    never = [n.name for n in nodes if n.name not in seen and n.spec.listen is None]
    for name in never:
        print(f"resonance up: the bridge of {name} never connected to its node", file=sys.stderr)
    return 1 if never else 0


async def _watch(
    running: Running, stop: asyncio.Event, deadline: float | None, seen: set[str], live: bool
) -> None:
    """Until stop or the deadline: scrape the bridges every second, noting which were ever connected,
    and (live) show them."""
    view = None
    if live:
        from rich.live import Live

        view = Live(render(running.nodes, {}, running.ports, running.recent), refresh_per_second=2)
        view.start()
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            states = await scrape(running.ports)
            seen.update(name for name, m in states.items() if m.get("resonance_websocket_connected") == 1.0)
            if view is not None:
                view.update(render(running.nodes, states, running.ports, running.recent))
            with contextlib.suppress(TimeoutError):
                timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
                await asyncio.wait_for(stop.wait(), timeout)
    finally:
        if view is not None:
            view.stop()


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
        where = (
            f"listening (local ws://127.0.0.1:{node.port}{node.listen_path}: dial it)"
            if node.spec.listen
            else f"endpoint {node.spec.endpoint} (local ws://127.0.0.1:{node.port})"
        )
        lines.append(
            f"  {node.name}: {where}, topic "
            f"{node.spec.topic}, anchor {node.spec.anchor}, {node.spec.frequency_hz} Hz, "
            f"bridge http :{opts.http_port_base + i}  [{node.source}]"
        )
    lines += [f"  error: {e}" for e in errors]
    return lines
