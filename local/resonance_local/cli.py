"""The `resonance` command: argument parsing and dispatch only. Each command imports what it needs
when it runs, so a bridge-only install (no extras) runs `resonance bridge` and says which extra the
others need."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from resonance_bridge import logs

from . import tools

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
# Modules of each extra: a command that misses one names the extra to install.
EXTRAS = {"kopf": "operator", "kubernetes_asyncio": "operator", "pydantic": "operator", "rich": "local"}


class MissingExtra(Exception):
    pass


def _needs(exc: ModuleNotFoundError, command: str) -> MissingExtra:
    extra = EXTRAS.get((exc.name or "").split(".")[0])
    if extra is None:
        raise exc
    return MissingExtra(
        f"resonance {command}: needs the '{extra}' extra ({exc.name} is not installed): "
        f"pip install 'resonance[{extra}]'"
    )


def _broker(port: int) -> int:
    from . import embedded

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
    parser = argparse.ArgumentParser(
        prog="resonance",
        description="Kafka <-> WebSocket bridges for Resonance nodes, their operator, local tools",
    )
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
    serve.add_argument(
        "--token", help="accept only bridges that send 'Authorization: Bearer TOKEN' (others get HTTP 401)"
    )
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
    try:
        return _dispatch(args)
    except MissingExtra as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "bridge":
        from resonance_bridge.main import run as run_bridge

        env = dict(os.environ)
        env.update(
            {var: str(v) for flag, var in BRIDGE_FLAGS.items() if (v := getattr(args, flag)) is not None}
        )
        return run_bridge(env)
    if args.command == "operator":
        try:
            from resonance_operator.main import run as run_operator
        except ModuleNotFoundError as exc:
            raise _needs(exc, "operator") from None
        return run_operator()
    if args.command in ("up", "config"):
        try:
            from . import up
        except ModuleNotFoundError as exc:
            raise _needs(exc, args.command) from None
        opts = up.Options(args.paths, broker_port=args.broker_port, http_port_base=args.http_port_base)
        if args.command == "config":
            print("\n".join(up.config_lines(opts)))
            return 0
        opts.run_for, opts.json = args.run_for, args.json
        opts.nodes, opts.demo = not args.no_nodes, not args.quiet_demo
        return asyncio.run(up.up(opts))
    if args.command == "broker":
        return _broker(args.port)
    if args.command == "node":
        from . import node

        lines = args.send_file.read_text().splitlines() if args.send_file else []
        asyncio.run(
            node.serve_forever(
                args.name,
                args.host,
                args.port,
                not args.no_ack,
                args.quiet,
                lines,
                not args.no_stdin,
                args.send_every,
                args.token,
            )
        )
        return 0
    if args.command == "send":
        return _send(args)
    asyncio.run(tools.tail(args.bootstrap_servers, args.topic, args.from_beginning, args.count, args.timeout))
    return 0


def _send(args: argparse.Namespace) -> int:
    topics = args.topic or _example_topics()
    if not topics:
        print("resonance send: no node topics in ./examples: name one with --topic", file=sys.stderr)
        return 2
    body = tools.build(args.type, args.message, args.anchor, args.frequency, args.s_roi)
    sent = asyncio.run(tools.send(args.bootstrap_servers, topics, body, args.count, args.anchor))
    print(f"sent {sent} {body['type']} message(s) to {', '.join(topics)}")
    return 0


def _example_topics() -> list[str]:
    """Every node topic of the manifests in ./examples, read as `resonance up` reads them."""
    try:
        from resonance_operator.settings import Settings

        from .manifests import load_nodes
    except ModuleNotFoundError as exc:
        raise _needs(exc, "send") from None
    nodes, _ = load_nodes([Path("examples")], Settings()) if Path("examples").is_dir() else ([], [])
    return list(dict.fromkeys(node.spec.topic for node in nodes))


if __name__ == "__main__":
    sys.exit(main())
