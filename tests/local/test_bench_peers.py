"""The benchmark's hand-framed WebSocket peers (bench/wire.py) speak the protocol the bridge's library
does: a figure measured through them is a figure of a real WebSocket exchange."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

WIRE = Path(__file__).resolve().parents[2] / "bench" / "wire.py"


async def events(process: asyncio.subprocess.Process, until: str) -> dict[str, dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    assert process.stdout is not None
    while until not in seen:
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        assert line, "the peer exited"
        event = json.loads(line)
        seen[event["event"]] = event
    return seen


async def peer(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(WIRE), *args, stdout=asyncio.subprocess.PIPE
    )
    port = (await events(process, "port"))["port"]["port"]
    return process, f"ws://127.0.0.1:{port}"


async def test_the_receiver_acks_every_message_and_counts_state_updates() -> None:
    process, url = await peer("receiver", "--expect", "300", "--latency")
    try:
        async with connect(url, compression=None) as ws:
            pong = await ws.ping(b"still there?")
            await asyncio.wait_for(pong, 5)
            await ws.send(json.dumps({"type": "frequency_sync", "frequency": 0.043}))
            big = "x" * 70_000  # a frame with a 64-bit length
            for i in range(300):
                await ws.send(
                    json.dumps({"type": "state_update", "t": 1, "data": {"seq": i, "pad": big[: i * 233]}})
                )
            acks = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(301)]
        assert acks[0] == {"type": "ack", "original_type": "frequency_sync"}
        assert all(a == {"type": "ack", "original_type": "state_update"} for a in acks[1:])
        done = (await events(process, "done"))["done"]
        assert done["count"] == 300 and done["samples"] == 300
    finally:
        process.terminate()
        await process.wait()


async def test_the_sender_sends_every_frame_and_counts_the_acks() -> None:
    process, url = await peer("sender", "--count", "500")
    try:
        async with connect(url, compression=None) as ws:
            seqs = []
            for _ in range(500):
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                seqs.append(message["data"]["seq"])
                await ws.send(json.dumps({"type": "ack", "original_type": message["type"]}))
            seen = await events(process, "done")
        assert seqs == list(range(500))
        assert seen["done"]["count"] == 500 and "first" in seen and "sent" in seen
    finally:
        process.terminate()
        await process.wait()
