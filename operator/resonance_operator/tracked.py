"""What the monitor keeps of each node, and the budget its status refreshes share."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass, field
from typing import Any

from . import health
from .model import Node

# Patches that only refresh a status's numbers, across all nodes: past 43 a second (1,000 nodes at the
# default frequency) each node's wait grows past its period: 10,000 nodes are not 430 patches a second.
REFRESHES_PER_S = 50.0


@dataclass
class Tracked:
    body: dict[str, Any]  # the node as last reconciled (for its identity in Events)
    node: Node
    deployment: dict[str, Any] | None = None
    error: str | None = None
    reason: str = "ReconcileFailed"  # the error's kind (status.NEXT)
    written: dict[str, Any] = field(default_factory=dict)  # the status as last patched (or found)
    patched_at: float = float("-inf")
    stale_at: float = health.NEVER  # when its beat goes stale: the timer's next look at it
    due: bool = False  # a write for a heartbeat waits its turn (Monitor._soon)
    ever_ready: bool = False  # a node that never was Ready is starting, not failing
    handled: int = 0  # the last generation carried out, or refused for good: status.observedGeneration
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class Heard:
    """A heartbeat, with what it is checked against: the uid it names and the Kafka it was read from."""

    uid: str
    bootstrap: str
    beat: health.Beat


class Budget:
    """A token bucket: `rate` a second, in bursts of as many."""

    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.at = rate, rate, 0.0

    def take(self, clock: float) -> bool:
        self.tokens, self.at = min(self.rate, self.tokens + (clock - self.at) * self.rate), clock
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def slim(deployment: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the status reads of a Deployment, and its version (to know an event of it seen)."""
    if deployment is None:
        return None
    meta = deployment["metadata"]
    kept = {"generation": meta.get("generation", 1), "resourceVersion": meta.get("resourceVersion")}
    return {"metadata": kept, "status": deployment.get("status") or {}}
