"""The `resonance` command: bridge, node serve, send, tail, broker."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import prometheus_client
import yaml

from . import config as configuration
from . import embedded, logs, node, tools
from .bridge import Bridge
from .health import HealthServer

log = logging.getLogger("resonance")

# Flags of `resonance bridge` that override the environment variable of the same meaning.
BRIDGE_FLAGS = {
    "node": "RESONANCE_NODE",
    "endpoint": "RESONANCE_ENDPOINT",
    "topic": "RESONANCE_TOPIC",
    "anchor": "RESONANCE_ANCHOR",
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "http_port": "RESONANCE_HTTP_PORT",
    "ack_mode": "RESONANCE_ACK_MODE",
    "frequency_hz": "RESONANCE_FREQUENCY_HZ",
}


def run_bridge(env: Mapping[str, str]) -> int:
    try:
        config = configuration.load(env)
    except configuration.ConfigError as exc:
        for problem in exc.problems:
            print(f"resonance bridge: {problem}", file=sys.stderr)
        return 2
    return asyncio.run(_bridge_main(config))


async def _bridge_main(config: configuration.Config) -> int:
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise
    bridge = Bridge(config)
    health = HealthServer(bridge.metrics.registry, bridge.readiness)
    try:
        port = await health.start(config.http_port)
    except OSError as exc:
        print(
            f"resonance bridge: RESONANCE_HTTP_PORT={config.http_port} cannot be used ({exc.strerror}): "
            "choose a free port",
            file=sys.stderr,
        )
        return 2
    log.info(
        "bridge %s: %s <-> %s (health and metrics on :%d)", config.node, config.topic, config.endpoint, port
    )
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:
        if main is None:
            return
        if bridge.stopping.is_set():
            main.cancel()  # a second signal: stop waiting for acks
            return
        bridge.stop()
        # Every closing step is bounded; this is the backstop that keeps the promise regardless,
        # within the pod's terminationGracePeriodSeconds (config.termination_grace_seconds).
        loop.call_later(config.shutdown_grace_s + configuration.CLOSE_BUDGET_S + 1, main.cancel)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await bridge.run()
    except asyncio.CancelledError:
        log.warning("bridge %s: shutdown cut short; unacked records will be redelivered", config.node)
        return 1
    finally:
        await health.close()
    log.info("bridge %s stopped cleanly", config.node)
    return 0


def _example_topics() -> list[str]:
    """Every node topic of the manifests in ./examples, as `resonance up` runs them; else the guide's two."""
    topics = []
    for path in sorted(Path("examples").glob("*.yaml")):
        with contextlib.suppress(OSError, yaml.YAMLError):
            for doc in yaml.safe_load_all(path.read_text()):
                topic = (
                    isinstance(doc, dict)
                    and doc.get("kind") == "ResonanceNode"
                    and (doc.get("spec") or {}).get("topic")
                )
                if isinstance(topic, str) and topic not in topics:
                    topics.append(topic)
    return topics or ["resonance.lexamoris", "resonance.nexus"]


def _broker(port: int) -> int:
    broker = embedded.EmbeddedBroker(port)
    try:
        broker.start()
    except embedded.BrokerUnavailable as exc:
        print(f"resonance broker: {exc}", file=sys.stderr)
        return 1
    print(f"embedded broker (tansu, in memory) on {broker.bootstrap}; Ctrl-C stops it", flush=True)
    try:
        assert broker.process is not None
        return broker.process.wait()
    finally:
        broker.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resonance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bridge = sub.add_parser(
        "bridge",
        help="relay one node's topic <-> WebSocket (configured by RESONANCE_* "
        "and KAFKA_* environment variables; flags override them)",
    )
    for flag, var in BRIDGE_FLAGS.items():
        bridge.add_argument(f"--{flag.replace('_', '-')}", dest=flag, help=f"overrides {var}")

    node_cmd = sub.add_parser("node", help="the reference node server").add_subparsers(
        dest="action", required=True
    )
    serve = node_cmd.add_parser("serve", help="a node server that prints and acks what it receives")
    serve.add_argument("--port", type=int, default=8766)
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--name", default="lexamoris")
    serve.add_argument("--no-ack", action="store_true", help="never ack (for bridges in ack mode 'send')")
    serve.add_argument("--quiet", action="store_true", help="do not print every message")
    serve.add_argument("--send-file", type=Path, help="send each line of this file once a bridge connects")
    serve.add_argument("--no-stdin", action="store_true", help="do not read lines to send from stdin")
    serve.add_argument(
        "--send-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="send a state_update of the node's own every SECONDS (demos)",
    )

    sub.add_parser(
        "operator", help="run the Kubernetes operator (settings: RESONANCE_* variables, see README)"
    )

    for name, text in (
        ("up", "run the whole pipeline locally: broker, nodes, one bridge per manifest"),
        ("config", "print the effective local configuration"),
    ):
        local = sub.add_parser(name, help=text)
        local.add_argument(
            "paths",
            nargs="*",
            type=Path,
            default=[Path("examples")],
            help="ResonanceNode manifests or folders of them (default: examples/)",
        )
        local.add_argument("--broker-port", type=int, default=9092)
        local.add_argument(
            "--http-port-base", type=int, default=18080, help="bridge i serves /metrics on base+i"
        )
        if name == "up":
            local.add_argument("--for", dest="run_for", type=float, help="stop after this many seconds")
            local.add_argument(
                "--json", action="store_true", help="no live view; print a JSON summary at exit"
            )
            local.add_argument(
                "--no-nodes", action="store_true", help="use the manifests' endpoints as they are"
            )
            local.add_argument("--quiet-demo", action="store_true", help="do not publish demo messages")

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    send = sub.add_parser("send", help="produce a message of the guide's format to node topics")
    send.add_argument("--type", choices=sorted(tools.TYPES), default="state")
    send.add_argument("--message", default="")
    send.add_argument("--topic", action="append", help="repeatable; default: every node topic in ./examples")
    send.add_argument("--anchor", default="BOLZANO_71")
    send.add_argument("--frequency", type=float, default=0.043)
    send.add_argument("--s-roi", type=float, default=0.502)
    send.add_argument("--count", type=int, default=1, help="send this many (numbered by a 'seq' field)")
    send.add_argument("--bootstrap-servers", default=bootstrap)

    broker = sub.add_parser(
        "broker", help="run the embedded Kafka-protocol broker (tansu, in memory) for local use"
    )
    broker.add_argument("--port", type=int, default=9092)

    tail = sub.add_parser("tail", help="print a topic's records as JSON lines")
    tail.add_argument("topic")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--count", type=int, help="exit after this many records")
    tail.add_argument("--timeout", type=float, help="exit after this many seconds")
    tail.add_argument("--bootstrap-servers", default=bootstrap)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(os.environ.get("RESONANCE_LOG_LEVEL", "INFO"))
    if args.command in ("up", "config"):
        from resonance_operator import up  # imported here: bridges never load the operator

        opts = up.Options(args.paths, broker_port=args.broker_port, http_port_base=args.http_port_base)
        if args.command == "config":
            print("\n".join(up.config_lines(opts)))
            return 0
        opts.run_for, opts.json, opts.nodes, opts.demo = (
            args.run_for,
            args.json,
            not args.no_nodes,
            not args.quiet_demo,
        )
        return asyncio.run(up.up(opts))
    if args.command == "operator":
        from resonance_operator.main import run  # imported here: bridges never load kopf

        return run()
    if args.command == "bridge":
        env = dict(os.environ)
        env.update(
            {
                var: str(getattr(args, flag))
                for flag, var in BRIDGE_FLAGS.items()
                if getattr(args, flag) is not None
            }
        )
        return run_bridge(env)
    try:
        if args.command == "broker":
            return _broker(args.port)
        if args.command == "node":
            asyncio.run(
                node.serve_forever(
                    args.name,
                    args.host,
                    args.port,
                    not args.no_ack,
                    args.quiet,
                    args.send_file.read_text().splitlines() if args.send_file else [],
                    not args.no_stdin,
                    args.send_every,
                )
            )
        elif args.command == "send":
            body = tools.build(args.type, args.message, args.anchor, args.frequency, args.s_roi)
            topics = args.topic or _example_topics()
            sent = asyncio.run(tools.send(args.bootstrap_servers, topics, body, args.count, args.anchor))
            print(f"sent {sent} {body['type']} message(s) to {', '.join(topics)}")
        elif args.command == "tail":
            asyncio.run(
                tools.tail(args.bootstrap_servers, args.topic, args.from_beginning, args.count, args.timeout)
            )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
