"""The operator's Prometheus metrics, served on RESONANCE_OPERATOR_METRICS_PORT (/metrics)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry()
RECONCILES = Counter(
    "resonance_operator_reconciles",
    "Reconciles of a node's Deployment, by handler and result (ok, error)",
    ["handler", "result"],
    registry=REGISTRY,
)
HEARTBEATS = Counter(
    "resonance_operator_heartbeats",
    "Heartbeat records read, by result (used; ignored: not a bridge's or of an unknown node; rejected)",
    ["result"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "resonance_operator_heartbeats_rejected",
    "Heartbeat records of a known node not counted, by reason (wrong_bootstrap: read from a Kafka its "
    "bridge does not write to; uid_mismatch: naming another node object, or none)",
    ["reason"],
    registry=REGISTRY,
)
for _reason in ("wrong_bootstrap", "uid_mismatch"):  # exported at 0: an alert can watch them from the start
    REJECTED.labels(_reason)
CONSUMERS = Gauge(
    "resonance_operator_heartbeat_consumers",
    "Heartbeat topics read: the default Kafka's and each other Kafka some node names",
    registry=REGISTRY,
)
PATCHES = Counter(
    "resonance_operator_status_patches",
    "Status patches written, by trigger (transition, deployment, heartbeat, error: not written)",
    ["trigger"],
    registry=REGISTRY,
)
EVENTS_HELD = Counter(
    "resonance_operator_events_held",
    "Events not posted because their node posted too many (25 at once, then one per 5 minutes)",
    registry=REGISTRY,
)
WATCH_ERRORS = Counter(
    "resonance_operator_watch_errors",
    "Errors of kopf's watches of the API server (each is retried; a steady rise means trouble)",
    registry=REGISTRY,
)


class NodesByCondition:
    """resonance_operator_nodes{condition, status}: how many nodes have each condition in each status,
    read from the monitor's nodes at scrape time."""

    def __init__(self, statuses: Any) -> None:
        self.statuses = statuses  # () -> iterable of each node's written status

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "resonance_operator_nodes", "Nodes by condition and status", labels=["condition", "status"]
        )
        counts: dict[tuple[str, str], int] = {}
        for status in self.statuses():
            for cond in status.get("conditions") or ():
                key = (cond["type"], cond["status"])
                counts[key] = counts.get(key, 0) + 1
        for (condition, state), count in sorted(counts.items()):
            family.add_metric([condition, state], count)
        yield family


class _CountWatchErrors(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        WATCH_ERRORS.inc()


def serve(port: int, statuses: Any) -> None:
    """Start serving (a thread of prometheus_client's) and count kopf's watch errors."""
    REGISTRY.register(NodesByCondition(statuses))
    watch_log = logging.getLogger("kopf._cogs.clients.watching")
    counter = _CountWatchErrors(level=logging.ERROR)
    watch_log.addHandler(counter)
    start_http_server(port, registry=REGISTRY)
