"""A TCP proxy that can cut a server off: to its clients the broker behind it looks crashed (every
connection reset, new ones refused) while the broker keeps its data, as a restarted Kafka does."""

from __future__ import annotations

import asyncio
import contextlib

from resonance_bridge.embedded import free_port


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones (no FIN: a crash says no goodbye)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()

    async def _link(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_out.transport.abort()
            return
        self.links |= {client_out, server_out}
        await asyncio.gather(self._pump(client_in, server_out), self._pump(server_in, client_out))
        self.links -= {client_out, server_out}

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.transport.abort()  # one side gone: the Kafka protocol has no use for a half-open link
