"""Whether the node is still there: the session's two watchers, and what readiness asks.

The ack watchdog and the keepalive each end the session by raising (NodeSilent, NodeUnresponsive),
which the session takes as its reason to start over on a new connection.
"""

from __future__ import annotations

import asyncio
import time

from .config import Config
from .connection import NodeSilent, NodeUnresponsive, Relaying
from .metrics import Metrics
from .relay import Relay


async def watchdog(relay: Relay, cfg: Config, metrics: Metrics) -> None:
    """A node that acks nothing for the ack timeout gets a fresh connection and the records again."""
    timeout = cfg.ack_timeout_s
    while True:
        await asyncio.sleep(min(1.0, timeout / 4))
        if relay.stuck(time.monotonic()):
            metrics.ack_timeouts.inc()
            raise NodeSilent(f"the node acked nothing for {timeout:g}s; reconnecting to redeliver")


async def keepalive(ws: Relaying, relay: Relay, cfg: Config) -> None:
    """Ping every interval; no pong for the timeout while the bridge was reading, and nothing else
    either, means a dead connection TCP has not noticed (a black hole): end it. A node that still
    answers is alive, its pong queued behind frames of ours it is working through."""
    while True:
        await asyncio.sleep(cfg.ws_ping_interval_s)
        pinged, pong = ws.loop.time(), await ws.ping()
        listened = relay.listening(time.monotonic())
        try:
            async with asyncio.timeout(cfg.ws_ping_timeout_s):
                await pong
        except TimeoutError:
            heard = relay.listening(time.monotonic()) - listened
            if ws.last_heard > pinged:  # a busy node, not a dead one
                continue
            if heard >= cfg.ws_ping_timeout_s * 0.9:  # not conclusive while the bridge was deaf
                ws.transport.abort()  # no closing handshake with a peer that does not answer
                raise NodeUnresponsive(f"no pong within {cfg.ws_ping_timeout_s:g}s") from None


def unresponsive_for(ws: Relaying, relay: Relay, cfg: Config) -> float | None:
    """Seconds since anything arrived from the node, once that exceeds a keepalive interval and
    half the timeout while the bridge was reading (a black-holed connection looks alive)."""
    if relay.is_deaf:
        return None
    silent = time.monotonic() - ws.last_heard
    return silent if silent > cfg.ws_ping_interval_s + cfg.ws_ping_timeout_s / 2 else None
