"""The WebSocket connection to a node, whichever side dialled: websockets' connection plus what the
relay needs from below its message API.

- Each message is read undecoded with its kind (text or binary), so that invalid UTF-8 in a text
  frame becomes a dead letter and an error reply; websockets would close the connection (1007),
  and a node re-sending what was never answered would reconnect forever.
- Messages are read in bulk: a read's whole data frames are split here (framing.py) into an inbox
  the session empties in one go, not awaited one by one through the library's queue; what the
  library must see (control frames, anything unusual) it still parses, and answers.
- The bytes waiting to be written are bounded. Our own sends wait for the socket to drain, but
  websockets answers every ping with a pong by itself: a node that floods pings and never reads
  would grow that buffer without end. Past the bound the node is evidently not reading: the
  connection is dropped and the session starts over.
- Messages go out in batches: a fetched batch, or a run of answers, framed by framing.py (RFC 6455
  5.2, the hot path; the library still frames everything else) and written at once, one system call per
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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import DATA_OPCODES, Frame, Opcode
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from . import framing

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
    # Messages read and not taken by the session yet: past either bound the socket is not read until
    # the session took three quarters (TCP then pushes back on the node). A run of acks fits; a
    # frame larger than the bound arrives whole, then reading stops.
    INBOX_BYTES, INBOX_MESSAGES = 64 * 1024, 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox: deque[tuple[bytes, bool]] = deque()  # (payload, is_text), in the node's order
        self.inbox_bytes = 0
        self.arrived: asyncio.Future[None] | None = None  # the session waiting for a message
        self.fragments: list[bytes] = []  # a fragmented message so far (the library parses those)
        self.fragments_text = False
        self.inbox_full = False  # reading paused until the session takes messages
        self.unparsed = bytearray()  # the start of a frame whose end has not arrived
        self.splitting = True  # False once a frame came that only the library may parse
        self.last_heard = self.loop.time()
        self.overflowed = 0  # unsent bytes when the connection was dropped for not reading

    async def send_texts(self, messages: Sequence[bytes]) -> None:
        """Text messages (UTF-8 already) in one write, with the library's flow control and its
        ConnectionClosed once, after the write, like send()."""
        while self.send_in_progress is not None:  # a fragmented message goes first (we send none)
            await asyncio.shield(self.send_in_progress)
        async with self.send_context():  # checks the connection is open; writes and drains after
            self.protocol.writes.append(framing.text_frames(messages, masked=self.masked))

    def send_data(self) -> None:
        chunks = self.protocol.data_to_send()
        data = [chunk for chunk in chunks if chunk]
        if data:
            self.transport.write(data[0] if len(data) == 1 else b"".join(data))
        if len(data) < len(chunks):  # an empty chunk asks for a half-close: the library's to do
            self.protocol.writes.append(b"")
            super().send_data()

    # --- receiving: whole messages, in bulk -----------------------------------------------------

    async def arrival(self) -> None:
        """Returns once a message waits in the inbox; raises ConnectionClosed once the connection
        is closed and every message read was taken."""
        while not self.inbox:
            if self.connection_lost_waiter.done():
                raise self.close_exc
            self.arrived = self.loop.create_future()
            try:
                await self.arrived
            finally:
                self.arrived = None

    def take(self) -> tuple[bytes, bool] | None:
        """The next message read, as (payload, is_text); None when none waits."""
        if not self.inbox:
            return None
        message = self.inbox.popleft()
        self.inbox_bytes -= len(message[0])
        if self.inbox_full and self._below(4):
            self.inbox_full = False
            self.transport.resume_reading()
        return message

    def _below(self, fraction: int) -> bool:
        bounds = self.INBOX_BYTES // fraction, self.INBOX_MESSAGES // fraction
        return self.inbox_bytes <= bounds[0] and len(self.inbox) <= bounds[1]

    def _deliver(self, payload: bytes, text: bool) -> None:
        self.inbox.append((payload, text))
        self.inbox_bytes += len(payload)

    def data_received(self, data: bytes) -> None:
        self.last_heard = self.loop.time()
        protocol = self.protocol
        if not self.splitting or protocol.state is not OPEN or protocol.extensions or protocol.reader.buffer:
            super().data_received(data)  # the handshake, a compressed connection, the library's turn
        else:
            self._split(data)
        if self.inbox:
            self._wake()
            if not self.inbox_full and not self._below(1):
                self.inbox_full = True
                self.transport.pause_reading()
        unsent = self.transport.get_write_buffer_size()
        if unsent > self.max_unsent and not self.overflowed:
            self.overflowed = unsent
            self.transport.abort()

    def _split(self, data: bytes) -> None:
        """Whole data frames into the inbox; whole control frames, and all from anything unusual on,
        to the library; the start of a frame kept for the next read."""
        buffer: bytes | bytearray = data
        if self.unparsed:
            self.unparsed += data
            buffer = self.unparsed
        start, limit = 0, self.protocol.max_message_size
        while True:
            frame = framing.split(buffer, start, not self.masked, limit)
            if frame.kind == framing.DATA:
                self._deliver(frame.payload, frame.text)
            elif frame.kind == framing.CONTROL:
                super().data_received(bytes(buffer[start : frame.end]))
                if self.protocol.state is not OPEN:  # closing: the rest is the library's
                    frame = framing.Split(framing.OTHER, frame.end)
            if frame.kind == framing.INCOMPLETE or frame.kind == framing.OTHER:
                break
            start = frame.end
        if frame.kind == framing.OTHER:
            self.unparsed, self.splitting = bytearray(), False
            super().data_received(bytes(buffer[frame.end :]))
        elif buffer is data:
            self.unparsed = bytearray(data[start:])
        else:
            del self.unparsed[:start]

    def process_event(self, event: Any) -> None:
        # Data frames the library parsed (before the handshake's end, or once it parses everything)
        # join the same inbox, in order; the library's own queue is not used.
        if isinstance(event, Frame) and event.opcode in DATA_OPCODES:
            self.fragments.append(bytes(event.data))
            if event.fin:
                text = self.fragments_text if event.opcode is Opcode.CONT else event.opcode is Opcode.TEXT
                self._deliver(b"".join(self.fragments), text)
                self.fragments = []
            elif event.opcode is not Opcode.CONT:
                self.fragments_text = event.opcode is Opcode.TEXT
            return
        super().process_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._wake()

    def _wake(self) -> None:
        """The session waiting in arrival(), if any, looks again."""
        if self.arrived is not None and not self.arrived.done():
            self.arrived.set_result(None)


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
