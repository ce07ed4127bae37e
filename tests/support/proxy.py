"""A TCP proxy for faults between the bridge and a server (broker or node):
- cut(): the server looks crashed (every connection reset, new ones refused) while it keeps its
  data, as a restarted Kafka does;
- black_hole(): open connections stop forwarding without closing (a dead NAT entry), while new
  connections go through; black_hole(new=True): new ones too (a partition), until heal();
- delay: seconds added to every chunk forwarded (a slow broker);
- tls: the clients' side is TLS (a broker that speaks TLS, where the broker itself cannot);
- answer: while set, each connection gets these bytes instead, once its request is read (or
  whatever it sent in its first second): a hostile or broken server, until it is set to None;
- kafka: a KafkaFaults, to change a broker's responses (kafkafault.py)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from resonance_local.embedded import EmbeddedBroker, free_port

from .kafkafault import KafkaFaults

if TYPE_CHECKING:
    from .harness import Topics

# The `proxied` fixture (conftest): makes a broker behind a Proxy, with fresh topics.
Proxied = Callable[..., Awaitable[tuple[EmbeddedBroker, "Proxy", "Topics"]]]


class Proxy:
    def __init__(self, target_port: int, delay: float = 0.0, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.delay = delay
        self.tls = tls
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.holes: set[asyncio.StreamWriter] = set()  # links that forward nothing any more
        self.swallow_new = False
        self.answer: bytes | None = None
        self.answered = 0
        self.kafka: KafkaFaults | None = None  # set: Kafka responses are read, and changed on demand

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port, ssl=self.tls)

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones (no FIN: a crash says no goodbye)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()

    def black_hole(self, new: bool = False) -> None:
        """Open connections forward nothing from now on, and never close; with new, neither do the
        connections accepted from now on, until heal()."""
        self.holes |= self.links
        self.swallow_new = new

    def heal(self) -> None:
        """New connections go through again (the black-holed ones stay dead, as a NAT entry does)."""
        self.swallow_new = False

    async def _link(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        if self.answer is not None:
            await self._answer(self.answer, client_in, client_out)
            return
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_out.transport.abort()
            return
        self.links |= {client_out, server_out}
        if self.swallow_new:
            self.holes |= {client_out, server_out}
        if self.kafka is not None:
            await self.kafka.link(client_in, client_out, server_in, server_out)
        else:
            await asyncio.gather(self._pump(client_in, server_out), self._pump(server_in, client_out))
        self.links -= {client_out, server_out}

    async def _answer(
        self, answer: bytes, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError):
            with contextlib.suppress(TimeoutError, asyncio.LimitOverrunError):
                await asyncio.wait_for(client_in.readuntil(b"\r\n\r\n"), 1.0)
            client_out.write(answer)
            await client_out.drain()
            self.answered += 1
        client_out.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                if sink in self.holes:
                    await asyncio.Future()  # swallowed, and the link stays open
                sink.write(data)
                await sink.drain()
        sink.transport.abort()  # one side gone: neither protocol has use for a half-open link
