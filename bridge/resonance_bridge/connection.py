"""The WebSocket connection to a node: websockets' client connection plus what the relay needs from
below its message API.

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
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a platform without the library's C extension
    from websockets.utils import apply_mask

log = logging.getLogger("resonance.bridge")


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


class NodeConnection(ClientConnection):
    # Set per connection by the session (the default covers the opening handshake): what the
    # bridge's own flow-controlled sends can leave unsent, plus room for automatic replies.
    max_unsent = 8 * 1024 * 1024

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
            self.protocol.writes.append(text_frames(messages))

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


def why_closed(exc: BaseException | None) -> str:
    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd or exc.sent
        return f"connection closed ({frame.code} {frame.reason})".strip() if frame else "connection lost"
    return str(exc) or repr(exc)


def text_frames(messages: Sequence[bytes]) -> bytes:
    """Unfragmented text frames as a client sends them: masked, each with a fresh random key
    (RFC 6455 5.3), the keys drawn with one system call for the whole batch."""
    keys = os.urandom(4 * len(messages))
    out = bytearray()
    for i, payload in enumerate(messages):
        size, key = len(payload), keys[4 * i : 4 * i + 4]
        if size < 126:
            out += bytes((0x81, 0x80 | size))
        elif size < 65536:
            out += struct.pack("!BBH", 0x81, 0xFE, size)
        else:
            out += struct.pack("!BBQ", 0x81, 0xFF, size)
        out += key
        out += apply_mask(payload, key)
    return bytes(out)
