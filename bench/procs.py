"""The benchmark's child processes: spawned, read for their JSON events, and stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


class Proc:
    """A child process printing JSON events (bench/clock.py) on stdout; its stderr goes to a log.
    Waiting for an event fails at once if this process or one it depends on (`needs`) exits."""

    needs: list[Proc]

    def __init__(self, name: str, log: Path) -> None:
        self.name, self.log = name, log
        self.process: asyncio.subprocess.Process | None = None
        self.events: dict[str, dict[str, Any]] = {}
        self.arrived = asyncio.Event()
        self.spawned = 0.0
        self._reading: asyncio.Task[None] | None = None
        self.needs = []

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, command: list[str], env: dict[str, str] | None = None) -> Proc:
        with open(self.log, "ab") as err:  # noqa: ASYNC230 (a local file, opened once per process)
            self.spawned = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                *command,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env={**os.environ, **(env or {})},
                cwd=BENCH,
            )
        self._reading = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                self.events[event["event"]] = event
                self.arrived.set()

    async def wait(self, event: str, timeout: float) -> dict[str, Any]:
        """The event, once this process printed it; fails if it exits or the timeout passes first."""
        deadline = time.monotonic() + timeout
        while event not in self.events:
            for proc in (self, *self.needs):
                assert proc.process is not None
                if proc.process.returncode is not None:
                    raise RuntimeError(f"{proc.name} exited {proc.process.returncode}: {proc.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {event!r} within {timeout:.0f} s: {self.tail()}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.5)
        return self.events[event]

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self, grace: float = 15) -> int | None:
        if self.process is None:
            return None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self._reading is not None:
            self._reading.cancel()
        return self.process.returncode


def script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(BENCH / name), *args]
