"""The WebSocket connection to a node: websockets' client connection plus what the relay needs from
below its message API.

- Each message is read undecoded with its kind (text or binary), so that invalid UTF-8 in a text
  frame becomes a dead letter and an error reply; websockets would close the connection (1007),
  and a node re-sending what was never answered would reconnect forever.
- The bytes waiting to be written are bounded. Our own sends wait for the socket to drain, but
  websockets answers every ping with a pong by itself: a node that floods pings and never reads
  would grow that buffer without end. Past the bound the node is evidently not reading: the
  connection is dropped and the session starts over.
- Messages go out in batches: all frames the protocol has queued in one write, so one system call
  per fetched batch or per run of answers rather than per message (bench/RESULTS.md).
- When data last arrived, for readiness: a connection that is silent beyond the keepalive interval
  is suspect before the keepalive timeout declares it dead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

log = logging.getLogger("resonance.bridge")


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
        async with self.send_context():
            for message in messages:
                self.protocol.send_text(message)

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
