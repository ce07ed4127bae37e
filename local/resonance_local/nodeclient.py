"""The reference node that dials in: `resonance node connect URL`, the counterpart of `node serve`.

It connects to a listening bridge (RESONANCE_LISTEN; a node with `spec.listen`), and from then on
does what the node server does (node.py): prints and acks what the bridge sends, sends what it is
given, counts everything. A dropped connection is dialled again, backing off from 0.1 s to 2 s; a
refused handshake (a wrong token: 401) is said once per change of the answer, and retried slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .node import Node

MAX_DELAY_S = 2.0
REFUSED_DELAY_S = 5.0


class NodeClient(Node):
    def __init__(self, name: str, url: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.url = url
        self.refused = 0  # handshakes the bridge answered 401 (or another refusal)
        self.failed = 0  # attempts that reached nothing
        self.task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._dial())

    def _headers(self) -> dict[str, str] | None:
        if self.token is None:
            return None
        bearer = self.token_header.lower() == "authorization"
        return {self.token_header: f"Bearer {self.token}" if bearer else self.token}

    async def _dial(self) -> None:
        delay = 0.1
        while True:
            try:
                ws = await connect(
                    self.url,
                    additional_headers=self._headers(),
                    ssl=self.tls if self.url.startswith("wss://") else None,
                    compression=None,
                    max_size=None,
                    open_timeout=5,
                )
            except InvalidStatus as exc:
                self.refused += 1
                self._error(f"refused by the bridge: HTTP {exc.response.status_code} "
                            f"{exc.response.body.decode(errors='replace').strip()}")  # fmt: skip
                await asyncio.sleep(REFUSED_DELAY_S)
                continue
            except (OSError, TimeoutError, ssl.SSLError, Exception) as exc:  # down, restarting, TLS
                self.failed += 1
                self._error(f"cannot reach {self.url}: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            delay, self.last_error = 0.1, None
            async with ws:
                await self._session(ws, f"at {self.url}")
            await asyncio.sleep(0.05)  # dropped: dial again at once, but not in a tight loop

    def _error(self, message: str) -> None:
        if message != self.last_error:
            self._say(message)
        self.last_error = message

    async def kill(self) -> None:
        """Die like a crashed process: no closing handshake, no dialling again."""
        self.drop()
        await self._stop()

    async def close(self) -> None:
        await self._stop()
        for ws in list(self.connections):
            with contextlib.suppress(Exception):
                await ws.close()

    async def _stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
