"""The one polling helper of the tests: real servers change state on their own time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    probe: Callable[[], T | None], timeout: float = 30, message: str | Callable[[], str] = "the condition"
) -> T:
    """Poll probe() until it returns something truthy, and return that. Past the timeout, fail with
    the message, or what message() returns then (a process's log, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            said = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g}s waiting for {said}")
        await asyncio.sleep(0.05)
