"""RFC 6455 framing on the hot path, sans I/O: the bridge's own text frames out, and the node's whole
data frames in.

websockets parses each incoming frame in a generator, builds a Frame, checks it, and queues it in an
assembler that a coroutine awaits: ~5 us per message, and a node sends one ack per record. Here a
read is split in one loop into the unfragmented data frames it holds, handed over together. Only
what the library must see goes to it, whole: control frames (pings, pongs, the closing handshake),
and, for good, anything unusual (a fragmented message, reserved bits, a frame over the size limit,
wrong masking, an unknown opcode), which it answers exactly as before (1002, 1009).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import NamedTuple

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a platform without the library's C extension
    from websockets.utils import apply_mask

# What split() says of the frame at a position.
INCOMPLETE, DATA, CONTROL, OTHER = range(4)
_TEXT, _BINARY = 0x1, 0x2


class Split(NamedTuple):
    kind: int  # INCOMPLETE: wait for more bytes; CONTROL: hand buffer[start:end] to the library;
    #          OTHER: hand everything from start to the library, and every byte after it
    end: int  # where the frame ends (DATA, CONTROL)
    payload: bytes = b""  # DATA: the message, unmasked
    text: bool = False


def split(buffer: bytes | bytearray, start: int, masked: bool, max_size: int | None) -> Split:
    """The frame at `start`. `masked`: frames must be masked (a server reading a client's)."""
    available = len(buffer) - start
    if available < 2:
        return Split(INCOMPLETE, start)
    head1, head2 = buffer[start], buffer[start + 1]
    length, at = head2 & 0x7F, start + 2
    if length == 126:
        if available < 4:
            return Split(INCOMPLETE, start)
        (length,) = struct.unpack_from("!H", buffer, at)
        at += 2
    elif length == 127:
        if available < 10:
            return Split(INCOMPLETE, start)
        (length,) = struct.unpack_from("!Q", buffer, at)
        at += 8
    if bool(head2 & 0x80) != masked or head1 & 0x70 or (max_size is not None and length > max_size):
        return Split(OTHER, start)
    end = at + (4 if masked else 0) + length
    opcode = head1 & 0x0F
    if opcode & 0x08:  # a control frame: its own checks are the library's
        return Split(CONTROL, end) if end <= len(buffer) else Split(INCOMPLETE, start)
    if not head1 & 0x80 or opcode not in (_TEXT, _BINARY):  # fragmented, a continuation, unknown
        return Split(OTHER, start)
    if end > len(buffer):
        return Split(INCOMPLETE, start)
    body = buffer[at + 4 : end] if masked else buffer[at:end]
    payload = apply_mask(body, bytes(buffer[at : at + 4])) if masked else bytes(body)
    return Split(DATA, end, payload, opcode == _TEXT)


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
