"""The `resonance` command: argument parsing and dispatch only. Each command imports what it needs
when it runs, so a bridge-only install (no extras) runs `resonance bridge` and says which extra the
others need."""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from resonance_bridge import logs

from . import tools
from .arguments import BRIDGE_FLAGS, parser

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
    from .processes import die_with_parent

    broker = embedded.EmbeddedBroker(port)
    try:
        broker.start(preexec_fn=die_with_parent)  # a killed `resonance broker` leaves no tansu behind
    except embedded.BrokerUnavailable as exc:
        print(f"resonance broker: {exc}", file=sys.stderr)
        return 1
    print(f"embedded broker (tansu, in memory) on {broker.bootstrap}; Ctrl-C stops it", flush=True)
    try:
        assert broker.process is not None
        return broker.process.wait()
    finally:
        broker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        logs.setup(
            os.environ.get("RESONANCE_LOG_LEVEL", "INFO"), os.environ.get("RESONANCE_LOG_FORMAT", "text")
        )
    except ValueError as exc:
        print(f"resonance: {exc}", file=sys.stderr)
        return 2
    try:
        return _dispatch(args)
    except (MissingExtra, tools.Unreachable) as exc:
        print(exc, file=sys.stderr)
        return 2 if isinstance(exc, MissingExtra) else 1
    except tools.NotAllSent as exc:
        print(f"resonance send: {exc}", file=sys.stderr)
        return 1
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
        opts.run_for, opts.json, opts.logs = args.run_for, args.json, args.logs
        opts.nodes, opts.demo = not args.no_nodes, not args.quiet_demo
        return asyncio.run(up.up(opts))
    if args.command == "broker":
        return _broker(args.port)
    if args.command == "node" and args.action == "connect":
        return _connect(args)
    if args.command == "node":
        from . import node

        lines = args.send_file.read_text().splitlines() if args.send_file else []
        if (args.tls_cert is None) != (args.tls_key is None) or (args.client_ca and not args.tls_cert):
            print(
                "resonance node serve: --tls-cert and --tls-key go together (and --client-ca with them)",
                file=sys.stderr,
            )
            return 2
        tls = node.server_tls(args.tls_cert, args.tls_key, args.client_ca)
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
                tls,
                args.token_header,
            )
        )
        return 0
    if args.command == "send":
        return _send(args)
    if args.command == "replay":
        return _replay(args)
    if args.command == "topics":
        from . import topics

        groups = args.group if args.group is not None else [g for _, g in _example_nodes()]
        found = asyncio.run(topics.topics(args.bootstrap_servers, groups))
        print(topics.as_json(found) if args.json else topics.table(found))
        return 0
    asyncio.run(tools.tail(args.bootstrap_servers, args.topic, args.from_beginning, args.count, args.timeout))
    return 0


def _connect(args: argparse.Namespace) -> int:
    """`resonance node connect URL`: the reference node that dials a listening bridge."""
    from . import node, nodeclient

    if not args.url.startswith(("ws://", "wss://")) or (args.cert is None) != (args.key is None):
        print("resonance node connect: give a ws:// or wss:// URL (and --cert with --key)", file=sys.stderr)
        return 2
    tls = None
    if args.url.startswith("wss://"):
        tls = ssl.create_default_context(cafile=args.ca)
        if args.cert:
            tls.load_cert_chain(args.cert, args.key)
    lines = args.send_file.read_text().splitlines() if args.send_file else []
    client = nodeclient.NodeClient(args.name, args.url, ack=not args.no_ack, token=args.token, tls=tls)
    if args.quiet:
        client.printer = None

    async def main() -> None:
        await client.start()
        await node.run(client, f"dialling {args.url}", lines, not args.no_stdin, args.send_every)

    asyncio.run(main())
    return 0


def _replay(args: argparse.Namespace) -> int:
    """Ask the bridge of a node run by `resonance up` for a replay: its control file (README, "Replay")."""
    from resonance_bridge.replaypoint import parse

    from .manifests import replay_file

    try:
        point = parse(args.point)
    except ValueError as exc:
        print(f"resonance replay: --from {exc}", file=sys.stderr)
        return 2
    path = replay_file(args.node)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".new").write_text(point.value + "\n")
    path.with_suffix(".new").replace(path)  # whole, never half-written
    print(f"node {args.node}: replay from {point.value} asked for; its bridge takes it up within 2 s")
    return 0


def _send(args: argparse.Namespace) -> int:
    topics = args.topic or _example_topics()
    if not topics:
        print("resonance send: no node topics in ./examples: name one with --topic", file=sys.stderr)
        return 2
    if args.file is not None:
        if args.message is not None:
            print(
                "resonance send: --message and --file exclude each other: the file is the message",
                file=sys.stderr,
            )
            return 2
        try:
            payload = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
        except OSError as exc:
            print(
                f"resonance send: {args.file} cannot be read ({exc.strerror}): check the path",
                file=sys.stderr,
            )
            return 2
        sent = asyncio.run(tools.send_raw(args.bootstrap_servers, topics, payload, args.count, args.anchor))
        print(f"sent {sent} message(s) of {len(payload)} bytes to {', '.join(topics)}")
        return 0
    kind = args.type or "state"
    if args.message is not None and kind not in tools.TEXT_TYPES:
        print(
            f"resonance send: --message does not apply to --type {kind} (it carries no text): use --type "
            f"{' or '.join(sorted(tools.TEXT_TYPES))}, or --file for a message of your own",
            file=sys.stderr,
        )
        return 2
    body = tools.build(kind, args.message or "", args.anchor, args.frequency, args.s_roi)
    sent = asyncio.run(tools.send(args.bootstrap_servers, topics, body, args.count, args.anchor))
    print(f"sent {sent} {body['type']} message(s) to {', '.join(topics)}")
    return 0


def _example_topics() -> list[str]:
    """Every node topic of the manifests in ./examples, read as `resonance up` reads them."""
    return list(dict.fromkeys(topic for topic, _ in _example_nodes()))


def _example_nodes() -> list[tuple[str, str]]:
    """(topic, the bridge's consumer group under `resonance up`) of each manifest in ./examples."""
    try:
        from resonance_operator.settings import Settings

        from .manifests import load_nodes
    except ModuleNotFoundError as exc:
        raise _needs(exc, "send") from None
    nodes, _ = load_nodes([Path("examples")], Settings()) if Path("examples").is_dir() else ([], [])
    return [(node.spec.topic, f"resonance-bridge.local.{node.name}") for node in nodes]


if __name__ == "__main__":
    sys.exit(main())
