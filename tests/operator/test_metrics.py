"""Metrics: every series the chart's dashboard queries is exported by a running bridge or operator,
and the operator's counters move with its work."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Topics, bridge_env
from ..support.kube import ROOT, Cluster, Operator, condition, node
from ..support.poll import until


def exported(text: str) -> set[str]:
    """Series names a /metrics page offers, counters under their `_total` names."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(f"{name}_total" if kind == "counter" and not name.endswith("_total") else name)
            names.add(f"{name}_info" if kind == "info" else name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_the_dashboard_queries_only_what_bridges_and_the_operator_export(
    cluster: Cluster, operator: Operator, broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    server = NodeServer("lexamoris", port=0, printer=None)
    await server.start()
    dashboard = json.loads((ROOT / "charts" / "resonance" / "dashboards" / "resonance.json").read_text())
    queries = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    wanted = set(re.findall(r"\bresonance_[a-z_]+", queries))
    bridge = BridgeProcess(
        bridge_env(broker, topics, f"ws://127.0.0.1:{server.port}"), workdir / "bridge.log"
    )
    bridge.start()
    try:
        await bridge.wait_ready()
        offered = exported(bridge.get("/metrics")[1])
    finally:
        bridge.stop()
        await server.close()
    port = int(operator.env["RESONANCE_OPERATOR_METRICS_PORT"])
    offered |= exported(await until(lambda: _try(port), 30, "the operator's /metrics"))
    assert wanted <= offered, f"queried but exported by nothing: {sorted(wanted - offered)}"
    assert all(re.fullmatch(r"resonance_[a-z_]+", n) for n in offered if n.startswith("resonance"))


async def test_the_operators_counters_move_with_its_work(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    port = int(operator.env["RESONANCE_OPERATOR_METRICS_PORT"])

    def reconciles() -> float:
        match = re.search(
            r'resonance_operator_reconciles_total\{handler="node",result="ok"\} (\S+)', _try(port) or ""
        )
        return float(match[1]) if match else 0.0

    before = reconciles()
    cluster.apply(node(namespace, "metered"))
    await until(lambda: condition(cluster.get("rn", "metered", namespace), "Ready"), 30, "the node's status")
    await until(lambda: reconciles() > before, 10, "a counted reconcile")
    text = _try(port) or ""
    assert re.search(r'resonance_operator_nodes\{condition="Ready",status="False"\} [1-9]', text), text
    assert re.search(r'resonance_operator_status_patches_total\{trigger="transition"\} [1-9]', text), text


def _try(port: int) -> str | None:
    try:
        return scrape(port)
    except OSError:
        return None
