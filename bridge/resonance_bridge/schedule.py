"""A fixed-rate schedule that keeps its phase and measures how well it keeps time."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable


async def every(interval: float, tick: Callable[[], None], drift: Callable[[float], None]) -> None:
    """Call tick() every `interval` seconds, on deadlines rather than sleeps so the rate does not
    drift. A tick late by more than an interval (a stalled machine) skips the missed slots instead
    of bursting. drift() gets the mean of the last ten intervals minus `interval`: a late tick
    shows, without swinging the value by the whole stall and back."""
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    ticks: deque[float] = deque(maxlen=11)
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        now = loop.time()
        ticks.append(now)
        if len(ticks) > 1:
            drift((ticks[-1] - ticks[0]) / (len(ticks) - 1) - interval)
        next_at += interval * max(1, math.ceil((now - next_at) / interval))
        tick()
