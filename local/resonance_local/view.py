"""What `resonance up` shows: each bridge's /metrics, as a live table and as a JSON summary."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
from collections.abc import Iterable
from typing import Any

from .manifests import LocalNode

Metrics = dict[str, float]


async def _get(port: int, path: str) -> str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 2)
    finally:
        writer.close()
    return response.split(b"\r\n\r\n", 1)[-1].decode()


def parse(text: str) -> Metrics:
    """Prometheus text format, one sample per line: `name{labels} value`."""
    samples: Metrics = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                samples[name] = float(value)
    return samples


async def scrape(ports: dict[str, int]) -> dict[str, Metrics]:
    async def one(port: int) -> Metrics:
        try:
            return parse(await _get(port, "/metrics"))
        except (OSError, TimeoutError):
            return {}  # not up yet, or gone

    names = list(ports)
    results = await asyncio.gather(*(one(ports[n]) for n in names))
    return dict(zip(names, results, strict=True))


def _sum(m: Metrics, prefix: str) -> int:
    return int(sum(v for k, v in m.items() if k.startswith(prefix)))


def in_use(node: LocalNode, m: Metrics) -> str:
    """The endpoint the bridge connects to (its resonance_bridge_info), which `up` points at the
    local node server; the manifest's until the bridge answers."""
    for key in m:
        if key.startswith("resonance_bridge_info{") and (found := re.search(r'endpoint="([^"]*)"', key)):
            return found.group(1)
    return node.spec.endpoint or f"nodes dialling ws://127.0.0.1:{node.port}{node.listen_path}"


def client_of(m: Metrics) -> str | None:
    """The address a listening bridge's node dialled in from, while it is connected."""
    for key in m:
        if key.startswith("resonance_listen_client_connected_since_seconds{"):
            found = re.search(r'client="([^"]*)"', key)
            return found.group(1) if found else None
    return None


def summary(node: LocalNode, m: Metrics, port: int) -> dict[str, Any]:
    last = m.get("resonance_last_heartbeat_timestamp_seconds", 0.0)
    control = m.get("resonance_control_acks_total", 0.0)
    return {
        "node": node.name,
        "endpoint": in_use(node, m),
        "spec_endpoint": node.spec.endpoint,
        "topic": node.spec.topic,
        "metrics": f"http://127.0.0.1:{port}/metrics",
        "connected": m.get("resonance_websocket_connected") == 1.0,
        "listening": node.spec.listen is not None,
        "client": client_of(m),
        "kafka_connected": m.get("resonance_kafka_connected") == 1.0,
        "relayed_out": int(m.get('resonance_messages_relayed_total{direction="outbound"}', 0)),
        "relayed_in": int(m.get('resonance_messages_relayed_total{direction="inbound"}', 0)),
        # Acks of records; the node's acks of the bridge's own heartbeats and frequency_syncs apart.
        "acks_from_node": int(m.get('resonance_acks_total{direction="from_node"}', 0) - control),
        "heartbeat_acks": int(control),
        "acks_to_node": int(m.get('resonance_acks_total{direction="to_node"}', 0)),
        "dead_letters": _sum(m, "resonance_dead_letters_total"),
        "in_flight": int(m.get("resonance_in_flight", 0)),
        "heartbeats": int(m.get("resonance_heartbeats_total", 0)),
        "last_heartbeat": datetime.datetime.fromtimestamp(last, datetime.UTC).isoformat() if last else None,
        "heartbeat_drift_seconds": round(m.get("resonance_heartbeat_drift_seconds", 0.0), 3),
    }


LEGEND = (
    "out: records relayed to the node · in: its messages stored in Kafka · "
    "acks: of records, from the node/to it · dead: dead letters · flight: sent, not yet acked · "
    "beat: last heartbeat · drift: its timing error"
)
_LINE = re.compile(r"^\[(?P<node>[^\]]+)\] (?P<arrow><-|->) (?P<rest>.*)$")
_MESSAGE = re.compile(r'"message": "((?:[^"\\]|\\.)*)"')


def line_of(text: str) -> str | None:
    """A node's output line as the view shows it: who, which way, the payload first, then its type;
    None for what is not a message (connections, acks of the node's own messages)."""
    match = _LINE.match(text)
    if match is None:
        return None
    node, rest = match["node"], match["rest"]
    if match["arrow"] == "->":
        return f"{node} -> {rest.removeprefix('sent ')}"
    kind, _, body = rest.partition(" ")
    if kind == "ack":
        return None
    return f"{node} <- {_payload(body)}  ({kind})"


def _payload(body: str) -> str:
    """What a person sent: data.message when there is one, else the data, else the message."""
    try:
        message = json.loads(body)
    except ValueError:  # cut short by the node's printing: find the text, if any
        found = _MESSAGE.search(body)
        return json.loads(f'"{found[1]}"') if found else body
    if not isinstance(message, dict):
        return body
    data = message.get("data")
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    shown = data if data is not None else {k: v for k, v in message.items() if k not in ("type", "timestamp")}
    return json.dumps(shown, separators=(",", ":"))


def _ws(s: dict[str, Any]) -> str:
    if s["listening"]:  # waiting for its node to dial in is no failure
        return f"[green]<-{s['client']}[/]" if s["connected"] else "[yellow]waiting[/]"
    return "[green]up[/]" if s["connected"] else "[red]down[/]"


def render(
    nodes: list[LocalNode], states: dict[str, Metrics], ports: dict[str, int], recent: Iterable[str]
) -> Any:
    """The live view; it fits 80 columns: endpoints and topics under the table, not in it."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="resonance: bridges", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for column in ("node", "ws", "out", "in", "acks", "dead", "flight", "beat", "drift"):
        table.add_column(column, justify="left" if column in ("node", "ws") else "right", no_wrap=True)
    places = []
    for node in nodes:
        s = summary(node, states.get(node.name, {}), ports[node.name])
        table.add_row(
            node.name,
            _ws(s),
            str(s["relayed_out"]),
            str(s["relayed_in"]),
            f"{s['acks_from_node']}/{s['acks_to_node']}",
            str(s["dead_letters"]),
            str(s["in_flight"]),
            s["last_heartbeat"][11:19] if s["last_heartbeat"] else "-",
            f"{s['heartbeat_drift_seconds']:+.2f}s",
        )
        where = in_use(node, states.get(node.name, {}))
        places.append(Text(f"  {node.name}: {node.spec.topic} <-> {where}", overflow="ellipsis"))
    lines = list(recent) or ["(waiting for messages)"]
    return Group(
        table,
        *places,
        Text(LEGEND, style="dim"),
        Text("recent messages:"),
        *(Text(f"  {line}", no_wrap=True, overflow="ellipsis") for line in lines),
    )
