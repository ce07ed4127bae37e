"""The benchmark's WebSocket peers, each its own process doing the least per message.

RFC 6455 framing by hand on asyncio Protocols: no per-message task, future or decode. A peer reads
only the head of a frame (the `type`, and the `t` stamp of latency runs) and writes every reply to
one chunk of received bytes in one write. This is what lets the harness run several times faster
than what it measures (bench/RESULTS.md, "ceilings").

    python bench/wire.py receiver --expect N     # the node, outbound: counts and acks state_update
    python bench/wire.py sender --count N        # the node, inbound: sends N frames, counts acks
    python bench/wire.py feeder --endpoint URL --count N   # ceiling: feeds a receiver directly
    python bench/wire.py drain --endpoint URL    # ceiling: reads a sender and acks, like a relay would

Each prints JSON lines on stdout: {"port"} once listening, then {"first"} and {"done"} snapshots
(clock.py) of the processes named by --watch, taken the moment the event happens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import re
import signal
import struct
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import clock

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HEAD = 96  # bytes of a text frame's payload read: the type, and the stamp of latency runs
_TYPE = re.compile(rb'"type"\s*:\s*"([^"]*)"')
_ORIGINAL = re.compile(rb'"original_type"\s*:\s*"([^"]*)"')


def frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    """One FIN frame; a client masks with the key 0000 (allowed, and the payload stays as it is)."""
    size = len(payload)
    mask = 0x80 if masked else 0
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, mask | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, mask | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, mask | 127, size)
    return head + (b"\0\0\0\0" if masked else b"") + payload


def unmask(data: memoryview, key: bytes) -> bytes:
    if not key or key == b"\0\0\0\0":
        return bytes(data)
    size = len(data)
    pad = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(size, "big")


class Peer(asyncio.Protocol):
    """A WebSocket endpoint: a server, or with `url` a client; subclasses handle text frames (`text`)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = urlsplit(url) if url else None
        self.client = url is not None
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.open = False
        self.out: list[bytes] = []  # replies to the chunk being parsed, written together
        self.paused = False
        self.closing = False
        self.closed = asyncio.get_event_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.url is not None:
            key = base64.b64encode(b"resonance-bench!").decode()
            transport.write(
                f"GET {self.url.path or '/'} HTTP/1.1\r\nHost: {self.url.netloc}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.writable()

    def writable(self) -> None:
        """The socket took what was written: a sender writes more."""

    def opened(self) -> None:
        """The handshake is done."""

    def text(self, head: bytes, size: int) -> None:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open and not self._handshake():
            return
        buffer, pos, end = self.buffer, 0, len(self.buffer)
        view = memoryview(buffer)
        while end - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            size, at = second & 0x7F, pos + 2
            if size == 126:
                if end - at < 2:
                    break
                size, at = struct.unpack_from("!H", buffer, at)[0], at + 2
            elif size == 127:
                if end - at < 8:
                    break
                size, at = struct.unpack_from("!Q", buffer, at)[0], at + 8
            key = b""
            if second & 0x80:
                key, at = bytes(buffer[at : at + 4]), at + 4
            if end - at < size:
                break
            opcode = first & 0x0F
            if opcode == 1:
                self.text(unmask(view[at : at + min(size, HEAD)], key), size)
            elif opcode == 9:  # ping: pong with its payload
                self.out.append(frame(10, unmask(view[at : at + size], key), self.client))
            elif opcode == 8:  # close: answer it, and a server then closes the TCP connection
                self.out.append(frame(8, b"", self.client))
                self.closing = True
            pos = at + size
        view.release()
        del buffer[:pos]
        if self.out and self.transport is not None:
            self.transport.write(b"".join(self.out))
            self.out.clear()
        if self.closing and self.transport is not None:
            self.transport.close()

    def _handshake(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        assert self.transport is not None
        if not self.client:
            found = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", head)
            assert found, "not a WebSocket handshake"
            accept = base64.b64encode(hashlib.sha1(found.group(1) + GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
        else:
            assert head.startswith(b"HTTP/1.1 101"), head[:100]
        self.open = True
        self.opened()
        return True


ACKS: dict[bytes, bytes] = {}


def ack(mtype: bytes, masked: bool) -> bytes:
    """The guide's ack, one prebuilt frame per type."""
    key = mtype + (b"/c" if masked else b"")
    if key not in ACKS:
        body = b'{"type": "ack", "original_type": "' + mtype + b'"}'
        ACKS[key] = frame(1, body, masked)
    return ACKS[key]


class Receiver(Peer):
    """Outbound's node: counts state_update frames and acks every message but acks and errors."""

    def __init__(self, state: Counts, url: str | None = None) -> None:
        super().__init__(url)
        self.state = state

    def text(self, head: bytes, size: int) -> None:
        found = _TYPE.search(head)
        mtype = found.group(1) if found else b""
        if mtype in (b"ack", b"error"):
            return
        self.out.append(ack(mtype, self.client))
        if mtype == b"state_update":
            self.state.arrived(head)


class Counts:
    """Arrivals across connections (a relay may reconnect), and the latency of stamped ones."""

    def __init__(self, expect: int, watch: clock.Watch, latency: bool) -> None:
        self.expect, self.watch, self.latency = expect, watch, latency
        self.count = 0
        self.delays: list[int] = []

    def arrived(self, head: bytes) -> None:
        self.count += 1
        if self.latency and (sent := clock.stamp(head)) is not None:
            self.delays.append(time.monotonic_ns() - sent)
        if self.count == 1:
            clock.emit("first", self.watch)
        if self.count == self.expect:
            clock.emit("done", self.watch, count=self.count, **clock.percentiles(self.delays))


class Sender(Peer):
    """Inbound's node: sends `count` frames as fast as the relay takes them and counts its acks."""

    def __init__(self, count: int, watch: clock.Watch, acks: bool, url: str | None = None) -> None:
        super().__init__(url)
        self.count, self.watch, self.acks = count, watch, acks
        self.sent = self.acked = 0

    def opened(self) -> None:
        clock.emit("first", self.watch)
        self.writable()

    def writable(self) -> None:
        assert self.transport is not None
        while not self.paused and self.sent < self.count:
            upto = min(self.count, self.sent + 64)
            self.transport.write(
                b"".join(frame(1, clock.record(i), self.client) for i in range(self.sent, upto))
            )
            self.sent = upto
            if self.sent == self.count:
                clock.emit("sent", self.watch)
                if not self.acks:
                    clock.emit("done", self.watch, count=self.count)

    def text(self, head: bytes, size: int) -> None:
        found = _TYPE.search(head)
        mtype = found.group(1) if found else b""
        if mtype != b"ack":
            self.out.append(ack(mtype, self.client))  # the relay's frequency_sync and heartbeats
            return
        original = _ORIGINAL.search(head)
        if original and original.group(1) == b"state_update":
            self.acked += 1
            if self.acked == self.count and self.acks:
                clock.emit("done", self.watch, count=self.acked)
                if self.client and self.transport is not None:
                    self.transport.close()  # the feeder's work is done


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None if stop.done() else stop.set_result(None))
    watch = clock.Watch(args.watch)
    factory: Callable[[], Peer]
    if args.role in ("receiver", "sender"):
        if args.role == "receiver":
            counts = Counts(args.expect, watch, args.latency)
            factory = lambda: Receiver(counts)  # noqa: E731
        else:
            factory = lambda: Sender(args.count, watch, not args.no_acks)  # noqa: E731
        server = await loop.create_server(factory, "127.0.0.1", 0)
        clock.emit("port", port=server.sockets[0].getsockname()[1])
        await stop
        server.close()
        return
    url = urlsplit(args.endpoint)
    peer: Peer
    # feeder: the receiver's ceiling, fed with no relay between; or a node that dials a listening relay
    if args.role == "feeder":
        peer = Sender(args.count, watch, True, args.endpoint)
    else:  # drain: the sender's ceiling, read and acked like a relay would; or a node dialling in
        peer = Receiver(Counts(args.count, watch, False), args.endpoint)
    for attempt in range(300):  # a listening relay may be starting: dial until it answers
        try:
            await loop.create_connection(lambda: peer, url.hostname, url.port)
            break
        except ConnectionRefusedError:
            if attempt == 299:
                raise
            await asyncio.sleep(0.1)
    await asyncio.wait([stop, peer.closed], return_when=asyncio.FIRST_COMPLETED)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", choices=("receiver", "sender", "feeder", "drain"))
    parser.add_argument("--expect", type=int, default=0, help="receiver: state_update frames to count")
    parser.add_argument("--count", type=int, default=0, help="sender, feeder: frames to send")
    parser.add_argument("--endpoint", help="feeder, drain: the ws:// URL to connect to")
    parser.add_argument("--latency", action="store_true", help="receiver: report delays of stamped records")
    parser.add_argument("--no-acks", action="store_true", help="sender: done when written (no acks come)")
    parser.add_argument("--watch", default="", help="pids whose CPU each snapshot records: 1,2 or @file")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
