"""A minimal HTTP server for the kubelet's probes and Prometheus: /healthz, /readyz, /metrics.

asyncio's own server on the bridge's event loop, on purpose: /healthz answering proves that very
loop is alive, which a server on a thread of its own (as prometheus_client's) would not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .promtext import CONTENT_TYPE, Registry

Readiness = Callable[[], tuple[bool, str]]


class HealthServer:
    def __init__(self, registry: Registry, readiness: Readiness) -> None:
        self.registry = registry
        self.readiness = readiness
        self.server: asyncio.Server | None = None

    async def start(self, port: int, host: str = "0.0.0.0") -> int:
        self.server = await asyncio.start_server(self._handle, host, port)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def respond(self, path: str) -> tuple[int, str, bytes]:
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            ready, why = self.readiness()
            return (200 if ready else 503), "text/plain", why.encode() + b"\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE, self.registry.exposition()
        return 404, "text/plain", b"not found: try /healthz, /readyz or /metrics\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            path = request.split(b" ", 2)[1].decode("latin-1").split("?", 1)[0]
            status, ctype, body = self.respond(path)
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, IndexError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a broken or slow client; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
