"""The `resonance` command's arguments: every user error is one line naming the fix, never a traceback."""

from __future__ import annotations

import argparse
import dataclasses
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

from resonance_bridge.config import Config, declared

from .tools import TYPES

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


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block): what is wrong and where help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: use a number from 1 to 65535")
    return value


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: use a whole number of at least 1")
    return value


def _version() -> str:
    try:
        return version("resonance")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def parser() -> argparse.ArgumentParser:
    top = Parser(
        prog="resonance",
        description="Kafka <-> WebSocket bridges for Resonance nodes, their operator, local tools",
    )
    top.add_argument("--version", action="version", version=f"resonance {_version()}")
    sub = top.add_subparsers(dest="command", required=True)

    required = [env for env, default in declared(Config).values() if default is dataclasses.MISSING]
    bridge = sub.add_parser(
        "bridge",
        help="relay one node's topic <-> WebSocket (configured by RESONANCE_* "
        "and KAFKA_* environment variables; flags override them)",
        description="Relay one node's Kafka topic <-> its WebSocket endpoint, at-least-once both ways.",
        epilog=f"Required: RESONANCE_ENDPOINT (or RESONANCE_LISTEN: nodes dial in), {', '.join(required)} "
        "(or the flags above). Every variable, with its default: the README's bridge table.",
    )
    for flag, var in BRIDGE_FLAGS.items():
        bridge.add_argument(f"--{flag.replace('_', '-')}", dest=flag, help=f"overrides {var}")

    node_cmd = sub.add_parser(
        "node", help="the reference nodes: a server the bridge dials, a client that dials it"
    ).add_subparsers(dest="action", required=True)
    serve = node_cmd.add_parser("serve", help="a node server that prints and acks what it receives")
    serve.add_argument("--port", type=port, default=8766)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--name", default="lexamoris")
    serve.add_argument("--no-ack", action="store_true", help="never ack (for bridges in ack mode 'send')")
    serve.add_argument(
        "--token", help="accept only bridges that send 'Authorization: Bearer TOKEN' (others get HTTP 401)"
    )
    serve.add_argument(
        "--token-header",
        default="Authorization",
        help="where --token goes: Authorization (Bearer) or e.g. X-API-Key",
    )
    serve.add_argument("--tls-cert", type=Path, help="serve wss:// with this PEM certificate (and --tls-key)")
    serve.add_argument("--tls-key", type=Path, help="the certificate's PEM key")
    serve.add_argument(
        "--client-ca", type=Path, help="require client certificates signed by this CA (mutual TLS)"
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

    dial = node_cmd.add_parser(
        "connect", help="a node that dials a listening bridge (spec.listen), prints and acks what it receives"
    )
    dial.add_argument("url", help="the bridge's ws:// or wss:// URL, e.g. ws://127.0.0.1:8765")
    dial.add_argument("--name", default="resonance-server")
    dial.add_argument("--no-ack", action="store_true", help="never ack (for bridges in ack mode 'send')")
    dial.add_argument("--token", help="present 'Authorization: Bearer TOKEN' (spec.listen.auth)")
    dial.add_argument("--ca", type=Path, help="verify a wss:// bridge with this PEM CA bundle")
    dial.add_argument("--cert", type=Path, help="a client certificate for mutual TLS (and --key)")
    dial.add_argument("--key", type=Path, help="the certificate's PEM key")
    dial.add_argument("--quiet", action="store_true", help="do not print every message")
    dial.add_argument("--send-file", type=Path, help="send each line of this file once connected")
    dial.add_argument("--no-stdin", action="store_true", help="do not read lines to send from stdin")
    dial.add_argument(
        "--send-every", type=float, default=0.0, metavar="SECONDS", help="send a state_update every SECONDS"
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
        local.add_argument("--broker-port", type=port, default=9092)
        local.add_argument(
            "--http-port-base", type=port, default=18080, help="bridge i serves /metrics on base+i"
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
            local.add_argument(
                "--logs",
                type=Path,
                help="keep the logs in this folder (default: a temporary one, removed on exit)",
            )

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    send = sub.add_parser("send", help="produce a message of the guide's format to node topics")
    what = send.add_mutually_exclusive_group()
    what.add_argument("--type", choices=sorted(TYPES), help="state (default), sync, repo or heartbeat")
    what.add_argument(
        "--file", type=Path, help="send this file's content as it is, one message (- reads standard input)"
    )
    send.add_argument("--message", help="the text of a state or repo message")
    send.add_argument("--topic", action="append", help="repeatable; default: every node topic in ./examples")
    send.add_argument("--anchor", default="BOLZANO_71")
    send.add_argument("--frequency", type=float, default=0.043)
    send.add_argument("--s-roi", type=float, default=0.502)
    send.add_argument(
        "--count", type=positive, default=1, help="send this many (guide messages numbered by a 'seq' field)"
    )
    send.add_argument("--bootstrap-servers", default=bootstrap)

    again = sub.add_parser("replay", help="replay a node of `resonance up` from a point in time")
    again.add_argument("node", help="the node's name (metadata.name in its manifest)")
    again.add_argument(
        "--from",
        dest="point",
        required=True,
        help="an RFC 3339 time (2026-12-01T10:00:00Z), earliest, or partition:offset pairs (0:1200,1:900)",
    )

    broker = sub.add_parser(
        "broker", help="run the embedded Kafka-protocol broker (tansu, in memory) for local use"
    )
    broker.add_argument("--port", type=port, default=9092)

    tail = sub.add_parser("tail", help="print a topic's records as JSON lines")
    tail.add_argument("topic")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--count", type=positive, help="exit after this many records")
    tail.add_argument("--timeout", type=float, help="exit after this many seconds")
    tail.add_argument("--bootstrap-servers", default=bootstrap)
    listing = sub.add_parser("topics", help="list topics with their record counts and consumer lag")
    listing.add_argument(
        "--group",
        action="append",
        help="a consumer group whose lag to show (repeatable; default the bridges of the nodes in examples/)",
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument("--bootstrap-servers", default=bootstrap)
    return top
