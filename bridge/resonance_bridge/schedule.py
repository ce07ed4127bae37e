"""A fixed-rate schedule that keeps its phase and measures how well it keeps time."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable


async def every(
    interval: float,
    tick: Callable[[], None],
    drift: Callable[[float], None],
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Call tick() every `interval` seconds, on deadlines rather than sleeps so the rate does not
    drift. A tick late by more than an interval (a stalled machine) skips the missed slots instead
    of bursting. drift() gets the mean of the last ten intervals minus `interval`: a late tick
    shows, without swinging the value by the whole stall and back. clock and sleep default to the
    event loop's; tests pass a fake pair."""
    now_fn = clock or asyncio.get_running_loop().time
    next_at = now_fn()
    ticks: deque[float] = deque(maxlen=11)
    while True:
        await sleep(max(0.0, next_at - now_fn()))
        now = now_fn()
        ticks.append(now)
        if len(ticks) > 1:
            drift((ticks[-1] - ticks[0]) / (len(ticks) - 1) - interval)
        next_at += interval * max(1, math.ceil((now - next_at) / interval))
        tick()
