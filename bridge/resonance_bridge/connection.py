"""The WebSocket connection to a node, whichever side dialled: websockets' connection plus what the
relay needs from below its message API.

- Each message is read undecoded with its kind (text or binary), so that invalid UTF-8 in a text
  frame becomes a dead letter and an error reply; websockets would close the connection (1007),
  and a node re-sending what was never answered would reconnect forever.
- The bytes waiting to be written are bounded. Our own sends wait for the socket to drain, but
  websockets answers every ping with a pong by itself: a node that floods pings and never reads
  would grow that buffer without end. Past the bound the node is evidently not reading: the
  connection is dropped and the session starts over.
- Messages go out in batches: a fetched batch, or a run of answers, framed here (RFC 6455 5.2, the
  hot path; the library still frames everything else) and written at once, one system call per
  batch rather than per message (bench/RESULTS.md).
- When data last arrived, for readiness: a connection that is silent beyond the keepalive interval
  is suspect before the keepalive timeout declares it dead.

`Connect` follows a redirect only within the endpoint's origin (scheme, host and port). Another
origin may lie outside the operator's allowed endpoints, and the node's client certificate would go
there too: such a redirect is refused, naming where it pointed, so the spec can say so instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a platform without the library's C extension
    from websockets.utils import apply_mask

log = logging.getLogger("resonance.bridge")


class NodeSilent(Exception):
    """The node stopped acking or answering pings: a reason to start over on a new connection."""


class NodeUnresponsive(NodeSilent):
    """Not even a pong within the keepalive's timeout: a dead connection (a black hole)."""


class RedirectRefused(InvalidHandshake):
    """The node redirected the bridge to another origin."""


class Connect(connect):
    def process_redirect(self, exc: Exception) -> Exception | str:
        followed = super().process_redirect(exc)
        if isinstance(followed, str):
            old, new = self.ws_uri, parse_uri(followed)
            if (old.secure, old.host, old.port) != (new.secure, new.host, new.port):
                return RedirectRefused(
                    f"redirected to {followed}: a redirect to another origin is not followed "
                    "(set the endpoint to it, if it is meant)"
                )
        return followed


class Relaying(Connection):
    """What the session needs below websockets' message API, on either side of the handshake."""

    # Set per connection by the session (the default covers the opening handshake): what the
    # bridge's own flow-controlled sends can leave unsent, plus room for automatic replies.
    max_unsent = 8 * 1024 * 1024
    masked = True  # a client masks its frames; a server must not (RFC 6455 5.1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kinds: deque[bool] = deque()  # per message not yet received: True for text
        self.last_heard = self.loop.time()
        self.overflowed = 0  # unsent bytes when the connection was dropped for not reading

    async def send_texts(self, messages: Sequence[bytes]) -> None:
        """Text messages (UTF-8 already) in one write, with the library's flow control and its
        ConnectionClosed once, after the write, like send()."""
        while self.send_in_progress is not None:  # a fragmented message goes first (we send none)
            await asyncio.shield(self.send_in_progress)
        async with self.send_context():  # checks the connection is open; writes and drains after
            self.protocol.writes.append(text_frames(messages, masked=self.masked))

    def send_data(self) -> None:
        chunks = self.protocol.data_to_send()
        data = [chunk for chunk in chunks if chunk]
        if data:
            self.transport.write(data[0] if len(data) == 1 else b"".join(data))
        if len(data) < len(chunks):  # an empty chunk asks for a half-close: the library's to do
            self.protocol.writes.append(b"")
            super().send_data()

    async def receive(self) -> tuple[bytes, bool]:
        """The next message as (payload, is_text)."""
        data = await self.recv(decode=False)
        return data, self.kinds.popleft()

    def process_event(self, event: Any) -> None:
        # Messages leave the assembler in the order their first frames arrive here.
        if isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.kinds.append(event.opcode is Opcode.TEXT)
        super().process_event(event)

    def data_received(self, data: bytes) -> None:
        self.last_heard = self.loop.time()
        super().data_received(data)
        unsent = self.transport.get_write_buffer_size()
        if unsent > self.max_unsent and not self.overflowed:
            self.overflowed = unsent
            self.transport.abort()


class NodeConnection(Relaying, ClientConnection):
    """The bridge dialled the node."""


class IncomingConnection(Relaying, ServerConnection):
    """The node dialled the bridge (listener.py). `gate` counts connections not past their request
    line and headers yet, so that a connect flood is refused at once instead of queueing."""

    masked = False
    gate: Gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.pending = True
        self.gate.pending += 1
        if self.gate.pending > self.gate.limit:
            self.gate.refused()
            self.handshook()
            self.transport.abort()

    def handshook(self) -> None:
        if self.pending:
            self.pending = False
            self.gate.pending -= 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.handshook()
        super().connection_lost(exc)

    def send_data(self) -> None:
        # websockets answers a request it cannot parse with nothing but a close: a person probing the
        # port (or a TLS client on a plain port) gets a 400 saying what was wrong instead.
        failed = self.protocol.handshake_exc
        if failed is not None and self.request is None and self.response is None:
            cause = failed.__cause__ or failed
            self.response = self.protocol.reject(400, f"not a WebSocket request: {cause!s:.200}\n")
            self.transport.write(self.response.serialize())
        super().send_data()


@dataclass
class Gate:
    limit: int
    refused: Callable[[], object]  # counts a connection dropped for the limit
    pending: int = 0


def why_closed(exc: BaseException | None) -> str:
    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd or exc.sent
        return f"connection closed ({frame.code} {frame.reason})".strip() if frame else "connection lost"
    return str(exc) or repr(exc)


def text_frames(messages: Sequence[bytes], masked: bool = True) -> bytes:
    """Unfragmented text frames: a client's masked, each with a fresh random key (RFC 6455 5.3), the
    keys drawn with one system call for the whole batch; a server's as they are."""
    keys = os.urandom(4 * len(messages)) if masked else b""
    bit = 0x80 if masked else 0
    out = bytearray()
    for i, payload in enumerate(messages):
        size = len(payload)
        if size < 126:
            out += bytes((0x81, bit | size))
        elif size < 65536:
            out += struct.pack("!BBH", 0x81, bit | 0x7E, size)
        else:
            out += struct.pack("!BBQ", 0x81, bit | 0x7F, size)
        if masked:
            key = keys[4 * i : 4 * i + 4]
            out += key
            out += apply_mask(payload, key)
        else:
            out += payload
    return bytes(out)
