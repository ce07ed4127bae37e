"""The `resonance` command as a user runs it: node serve, send, tail."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from resonance_local.embedded import EmbeddedBroker, free_port
from websockets.asyncio.client import ClientConnection, connect

from ..support.harness import Topics

RESONANCE = [sys.executable, "-m", "resonance_local"]
PIPE = asyncio.subprocess.PIPE


async def run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(*RESONANCE, *args, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return int(process.returncode or 0), out.decode(), err.decode()


async def connect_when_up(url: str) -> ClientConnection:
    for _ in range(100):
        try:
            return await connect(url)
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listens on {url}")


async def test_node_serve_acks_prints_and_sends_file_lines(workdir: Path) -> None:
    port = free_port()
    lines = workdir / "messages.jsonl"
    lines.write_text('{"type": "state_update", "data": {"status": "from file"}}\n')
    node = await asyncio.create_subprocess_exec(
        *RESONANCE,
        "node",
        "serve",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--name",
        "lexamoris",
        "--send-file",
        str(lines),
        "--no-stdin",
        stdout=PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with await connect_when_up(f"ws://127.0.0.1:{port}") as ws:
            assert json.loads(await ws.recv()) == {"type": "state_update", "data": {"status": "from file"}}
            await ws.send('{"type": "heartbeat", "anchor": "BOLZANO_71", "id": "h1"}')
            assert json.loads(await ws.recv()) == {"type": "ack", "original_type": "heartbeat", "id": "h1"}
            await ws.send('{"type": "ack", "original_type": "state_update"}')  # never acked back
            await ws.send("not json")  # survived, not acked
            await ws.send('{"type": "repository_event", "event_type": "commit", "data": {}}')
            assert json.loads(await ws.recv()) == {"type": "ack", "original_type": "repository_event"}
    finally:
        node.terminate()
        out = (await asyncio.wait_for(node.communicate(), 10))[0].decode()
    assert "[lexamoris] <- heartbeat" in out
    assert "[lexamoris] -> sent" in out
    assert "ignored a frame that is not a Resonance message" in out


async def test_send_and_tail(broker: EmbeddedBroker, topics: Topics) -> None:
    code, out, err = await run(
        "send",
        "--topic",
        topics.node,
        "--type",
        "repo",
        "--message",
        "Test",
        "--bootstrap-servers",
        broker.bootstrap,
    )
    assert code == 0, err
    assert out.strip() == f"sent 1 repository_event message(s) to {topics.node}"
    code, out, err = await run(
        "tail",
        topics.node,
        "--from-beginning",
        "--count",
        "1",
        "--timeout",
        "30",
        "--bootstrap-servers",
        broker.bootstrap,
    )
    assert code == 0, err
    record = json.loads(out.splitlines()[0])
    assert (record["topic"], record["offset"], record["key"]) == (topics.node, 0, "BOLZANO_71")
    body = record["value"]
    assert (body["type"], body["event_type"], body["data"]["message"], body["source"]) == (
        "repository_event",
        "commit",
        "Test",
        "resonance",
    )
