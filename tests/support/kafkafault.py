"""A broker's answers changed on the wire: the next response to a kind of request carries an error
code the broker did not send (a group coordinator that lost the group), or every response to it
does until healed (a partition whose leader never comes back, while metadata is answered), or a
topic is missing from the metadata (a Kafka that does not create topics on first use). The proxy
reads the Kafka framing both ways: each request's header names its API and version, and the response
with the same correlation id gets the error written where that API puts its error code."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import defaultdict, deque

PRODUCE, FETCH, METADATA, HEARTBEAT = 0, 1, 3, 12  # API keys
UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, GROUP_ID_NOT_FOUND, INVALID_RECORD = 3, 6, 69, 87


def _string(body: bytes, at: int) -> tuple[str | None, int]:
    (size,) = struct.unpack_from(">h", body, at)
    if size < 0:
        return None, at + 2
    return body[at + 2 : at + 2 + size].decode(), at + 2 + size


def _topic_error_at(version: int, body: bytes, topic: str) -> int | None:
    """Where a topic's error code sits in a Metadata response (v0-v5, as aiokafka asks)."""
    at = 4 if version >= 3 else 0  # throttle time
    (brokers,) = struct.unpack_from(">i", body, at)
    at += 4
    for _ in range(brokers):
        _, at = _string(body, at + 4)  # node id, host
        at += 4  # port
        if version >= 1:
            _, at = _string(body, at)  # rack
    if version >= 2:
        _, at = _string(body, at)  # cluster id
    at += 4 if version >= 1 else 0  # controller id
    (topics,) = struct.unpack_from(">i", body, at)
    at += 4
    for _ in range(topics):
        error_at = at
        name, at = _string(body, at + 2)
        if name == topic:
            return error_at
        at += 1 if version >= 1 else 0  # is internal
        (partitions,) = struct.unpack_from(">i", body, at)
        at += 4
        for _ in range(partitions):
            at += 2 + 4 + 4  # error code, partition, leader
            for _ in range(3 if version >= 5 else 2):  # replicas, in-sync replicas, offline replicas
                (count,) = struct.unpack_from(">i", body, at)
                at += 4 + 4 * count
    return None


def _error_at(api_key: int, version: int, body: bytes) -> int | None:
    """Where the error code to change sits in a response body (after the correlation id): the
    top-level one, or for a produce or a fetch the first partition's. Non-flexible versions only."""
    if api_key == PRODUCE and version <= 8:  # the first partition's: past the topic's name
        name: int = struct.unpack_from(">h", body, 4)[0]
        return 4 + 2 + name + 4 + 4
    if api_key == HEARTBEAT and version <= 3:
        return 4 if version >= 1 else 0
    if api_key == FETCH and 1 <= version <= 11:
        at = 4 + (6 if version >= 7 else 0)  # throttle time; v7+: error code and session id
        (topics,) = struct.unpack_from(">i", body, at)
        if topics < 1:
            return None
        (name,) = struct.unpack_from(">h", body, at + 4)
        at += 4 + 2 + name
        (partitions,) = struct.unpack_from(">i", body, at)
        return at + 4 + 4 if partitions >= 1 else None  # past the count and the partition id
    return None


class KafkaFaults:
    def __init__(self) -> None:
        self.once: dict[int, deque[int]] = defaultdict(deque)  # API key -> error codes, one response each
        self.always: dict[int, int] = {}  # API key -> error code, for every response until heal()
        self.missing: set[str] = set()  # topics Metadata responses say do not exist
        self.injected: list[tuple[int, int]] = []  # (API key, error code), as sent

    def next_response(self, api_key: int, error_code: int) -> None:
        self.once[api_key].append(error_code)

    def fail(self, api_key: int, error_code: int) -> None:
        self.always[api_key] = error_code

    def heal(self) -> None:
        self.always.clear()
        self.missing.clear()

    def _code(self, api_key: int) -> int | None:
        if self.once[api_key]:
            return self.once[api_key].popleft()
        return self.always.get(api_key)

    async def link(
        self,
        client_in: asyncio.StreamReader,
        client_out: asyncio.StreamWriter,
        server_in: asyncio.StreamReader,
        server_out: asyncio.StreamWriter,
    ) -> None:
        asked: dict[int, tuple[int, int]] = {}  # correlation id -> (API key, version)

        async def requests() -> None:
            while frame := await _frame(client_in):
                api_key, version, correlation = struct.unpack_from(">hhi", frame, 4)
                asked[correlation] = (api_key, version)
                server_out.write(frame)
                await server_out.drain()

        async def responses() -> None:
            while frame := await _frame(server_in):
                (correlation,) = struct.unpack_from(">i", frame, 4)
                api_key, version = asked.pop(correlation, (-1, -1))
                body = frame[8:]
                changes = []  # (where in the body, error code)
                if (at := _error_at(api_key, version, body)) is not None and (code := self._code(api_key)):
                    changes.append((at, code))
                for topic in self.missing if api_key == METADATA else ():
                    if (at := _topic_error_at(version, body, topic)) is not None:
                        changes.append((at, UNKNOWN_TOPIC_OR_PARTITION))
                if changes:
                    changed = bytearray(frame)
                    for at, code in changes:
                        struct.pack_into(">h", changed, 8 + at, code)
                        self.injected.append((api_key, code))
                    frame = bytes(changed)
                client_out.write(frame)
                await client_out.drain()

        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.gather(requests(), responses())
        client_out.transport.abort()
        server_out.transport.abort()


async def _frame(stream: asyncio.StreamReader) -> bytes:
    """One size-prefixed Kafka frame, with its size; empty at the end of the stream."""
    try:
        head = await stream.readexactly(4)
        (size,) = struct.unpack(">i", head)
        return head + await stream.readexactly(size)
    except asyncio.IncompleteReadError:
        return b""
