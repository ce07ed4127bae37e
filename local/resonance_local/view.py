"""What `resonance up` shows: each bridge's /metrics, as a live table and as a JSON summary."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
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


def summary(node: LocalNode, m: Metrics, port: int) -> dict[str, Any]:
    last = m.get("resonance_last_heartbeat_timestamp_seconds", 0.0)
    return {
        "node": node.name,
        "endpoint": node.spec.endpoint,
        "topic": node.spec.topic,
        "metrics": f"http://127.0.0.1:{port}/metrics",
        "connected": m.get("resonance_websocket_connected") == 1.0,
        "kafka_connected": m.get("resonance_kafka_connected") == 1.0,
        "relayed_out": int(m.get('resonance_messages_relayed_total{direction="outbound"}', 0)),
        "relayed_in": int(m.get('resonance_messages_relayed_total{direction="inbound"}', 0)),
        "acks_from_node": int(m.get('resonance_acks_total{direction="from_node"}', 0)),
        "acks_to_node": int(m.get('resonance_acks_total{direction="to_node"}', 0)),
        "dead_letters": _sum(m, "resonance_dead_letters_total"),
        "in_flight": int(m.get("resonance_in_flight", 0)),
        "heartbeats": int(m.get("resonance_heartbeats_total", 0)),
        "last_heartbeat": datetime.datetime.fromtimestamp(last, datetime.UTC).isoformat() if last else None,
        "heartbeat_drift_seconds": round(m.get("resonance_heartbeat_drift_seconds", 0.0), 3),
    }


def render(
    nodes: list[LocalNode], states: dict[str, Metrics], ports: dict[str, int], recent: Iterable[str]
) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="resonance: bridges", expand=True)
    for column in (
        "node",
        "endpoint",
        "topic",
        "connected",
        "out",
        "in",
        "acks",
        "dead",
        "in-flight",
        "last heartbeat",
        "drift",
    ):
        table.add_column(column)
    for node in nodes:
        s = summary(node, states.get(node.name, {}), ports[node.name])
        beat = s["last_heartbeat"][11:19] if s["last_heartbeat"] else "-"
        table.add_row(
            node.name,
            node.spec.endpoint,
            node.spec.topic,
            "[green]yes[/]" if s["connected"] else "[red]no[/]",
            str(s["relayed_out"]),
            str(s["relayed_in"]),
            f"{s['acks_from_node']}/{s['acks_to_node']}",
            str(s["dead_letters"]),
            str(s["in_flight"]),
            beat,
            f"{s['heartbeat_drift_seconds']:+.3f}s",
        )
    lines = list(recent) or ["(waiting for messages)"]
    return Group(
        table,
        Text("recent messages:"),
        *(Text(f"  {line}", no_wrap=True, overflow="ellipsis") for line in lines),
    )
