"""Jittered exponential backoff for reconnect loops that retry forever, and a stop-aware wait."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass


@dataclass
class Backoff:
    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0
    attempt: int = 0

    def next_delay(self) -> float:
        """Full jitter (AWS architecture blog): spreads reconnecting bridges so they do not stampede."""
        ceiling = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


async def pause(delay: float, stopping: asyncio.Event) -> None:
    """Sleep for `delay` seconds, or less if stopping is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), delay)
