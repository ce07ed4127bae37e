"""The bridge's own frame splitting (framing.split, Relaying's inbox) against websockets' parser and a
real server writing frames in arbitrary pieces: the same messages, in order, with pings, pongs,
fragmented messages and the closing handshake still the library's."""

from __future__ import annotations

import asyncio
import os
import random
import struct
from collections.abc import AsyncIterator

import pytest
from resonance_bridge import framing
from resonance_bridge.connection import NodeConnection
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from websockets.utils import apply_mask


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = False, rsv: int = 0) -> bytes:
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += struct.pack("!BH", bit | 126, size)
    else:
        head += struct.pack("!BQ", bit | 127, size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + apply_mask(payload, key)


def library(data: bytes, mask: bool) -> list[Frame]:
    """What websockets' own parser makes of the bytes."""
    reader, frames = StreamReader(), []
    reader.feed_data(data)
    reader.feed_eof()
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=mask, max_size=None, extensions=[])
        try:
            next(parser)
            while True:
                parser.send(None)
        except StopIteration as done:
            frames.append(done.value)
    return frames


@pytest.mark.parametrize("mask", [False, True])
def test_split_reads_what_the_library_reads_and_waits_for_every_incomplete_frame(mask: bool) -> None:
    sizes = [0, 1, 125, 126, 65535, 65536, 70_000]
    frames = [frame(0x1 if i % 2 else 0x2, os.urandom(n), mask=mask) for i, n in enumerate(sizes)]
    stream = b"".join(frames)
    expected = library(stream, mask)
    start = 0
    for whole, parsed in zip(frames, expected, strict=True):
        for cut in (1, 2, 3, 9, len(whole) - 1):  # every header length, and a byte short of the end
            if cut < len(whole):
                assert framing.split(stream[: start + cut], start, mask, None).kind == framing.INCOMPLETE
        split = framing.split(stream, start, mask, None)
        assert split.kind == framing.DATA and split.end == start + len(whole)
        assert (split.payload, split.text) == (parsed.data, parsed.opcode is Opcode.TEXT)
        start = split.end


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (frame(0x9, b"ping"), framing.CONTROL),
        (frame(0xA, b"pong"), framing.CONTROL),
        (frame(0x8, b"\x03\xe8bye"), framing.CONTROL),
        (frame(0x1, b"part", fin=False), framing.OTHER),  # fragmented
        (frame(0x0, b"rest"), framing.OTHER),  # a continuation
        (frame(0x3, b"?"), framing.OTHER),  # an unknown opcode
        (frame(0x1, b"x", rsv=0x40), framing.OTHER),  # compressed, or a protocol error
        (frame(0x1, b"x", mask=True), framing.OTHER),  # masked where it must not be
        (frame(0x1, b"x" * 200), framing.OTHER),  # over the size limit
    ],
    ids=["ping", "pong", "close", "fragment", "continuation", "opcode", "rsv", "masked", "too-big"],
)
def test_split_leaves_to_the_library_what_is_not_a_whole_data_frame(raw: bytes, kind: int) -> None:
    assert framing.split(raw, 0, False, 100).kind == kind


Script = list[bytes | str]  # raw bytes to write; "ping": the server pings through the library


@pytest.fixture
async def raw_server() -> AsyncIterator[tuple[str, list[Script]]]:
    """A server that writes each script's bytes below its protocol, in random pieces, and pings
    through the library where the script says so: a client that does not answer within 5 s ends
    the connection with an error (1011), not the clean close read_all() expects."""
    scripts: list[Script] = []

    async def handler(ws: ServerConnection) -> None:
        script, rng = scripts.pop(0), random.Random(len(scripts))
        for step in script:
            if step == "ping":
                await asyncio.wait_for(await ws.ping(), 5)
                continue
            assert isinstance(step, bytes)
            at = 0
            while at < len(step):
                piece = rng.choice((1, 2, 3, 7, 64, 1500, 70_000))
                ws.transport.write(step[at : at + piece])
                at += piece
                await asyncio.sleep(0.0005 if rng.random() < 0.3 else 0)
        await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}", scripts


async def read_all(url: str) -> list[tuple[bytes, bool]]:
    async with connect(url, create_connection=NodeConnection, max_size=200_000) as ws:
        assert isinstance(ws, NodeConnection)
        got = []
        with pytest.raises(ConnectionClosedOK):
            while True:
                await ws.arrival()
                while (message := ws.take()) is not None:
                    got.append(message)
        return got


async def test_a_stream_in_arbitrary_pieces_arrives_whole_in_order_pings_answered(
    raw_server: tuple[str, list[Script]],
) -> None:
    url, scripts = raw_server
    messages = [(os.urandom(n), n % 2 == 0) for n in [0, 5, 125, 126, 1000, 65535, 65536, 100_000] * 5]
    script: Script = []
    for i, (payload, text) in enumerate(messages):
        script.append(frame(0x1 if text else 0x2, payload))
        if i % 9 == 4:
            script.append("ping")
    scripts.append(script)
    assert await read_all(url) == messages


async def test_after_a_fragmented_message_the_library_parses_and_the_order_holds(
    raw_server: tuple[str, list[Script]],
) -> None:
    url, scripts = raw_server
    before = [frame(0x1, b"one"), frame(0x2, b"two")]
    fragmented = [frame(0x1, b"thr", fin=False), frame(0x9, b"mid-message ping"), frame(0x0, b"ee")]
    after: Script = [frame(0x1, b"four"), "ping", frame(0x1, b"five" * 1000)]
    scripts.append([*before, *fragmented, *after])
    got = await read_all(url)
    assert got == [(b"one", True), (b"two", False), (b"three", True), (b"four", True), (b"five" * 1000, True)]


@pytest.mark.parametrize("masked", [True, False], ids=["client", "server"])
def test_the_bridges_own_text_frames_parse_as_the_library_parses_frames(masked: bool) -> None:
    """The hot path frames batches itself (framing.text_frames); the websockets parser, which the
    node runs, reads them back exactly, for every length encoding, each with its own mask key."""
    payloads = [b"", b"x", b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 65536, "é€".encode() * 40_000]
    frames = library(framing.text_frames(payloads, masked=masked), mask=masked)
    assert [(f.opcode, f.fin, f.data) for f in frames] == [(Opcode.TEXT, True, p) for p in payloads]
    batch = framing.text_frames([b"same"] * 50)
    keys = {batch[i * 10 + 2 : i * 10 + 6] for i in range(50)}  # 2 header bytes, 4 key, 4 payload
    assert len(keys) == 50
